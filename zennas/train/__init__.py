"""Trainers: a shared recipe (schedule, EMA, mixup, distillation, checkpoints) and task plug-ins."""

# The `zennas train longtail --method` names (zennas.train.config holds every setting; no torch there).
from zennas.train.config import LONGTAIL_METHODS

__all__ = ["LONGTAIL_METHODS"]
