"""Trainers: a shared recipe (schedule, EMA, mixup, distillation, checkpoints) and task plug-ins."""

# The `zennas train longtail --method` names, here (no torch import) so the CLI can list them cheaply.
LONGTAIL_METHODS = (
    "ce", "cb-resample", "sqrt-resample", "cb-reweight", "logit-adjust", "balanced-softmax", "crt", "tau-norm", "bbn",
    "dive",
)  # fmt: skip
