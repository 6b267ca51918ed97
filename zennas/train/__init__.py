"""Trainers: a shared recipe (schedule, EMA, mixup, distillation, checkpoints) and task plug-ins."""
