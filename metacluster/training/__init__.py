"""Train and evaluate KAN models on a `Dataset`.

- `losses`: task and distillation losses; `loop`: the one minibatch loop that
  `train_model` and every compression stage run their epochs in;
- `evaluation`: input shaping, the compatibility check, `predict`, the metric;
- `build`: `build_model_for`, a fresh model shaped for a data set;
- `train`: `train_model`, the loop behind `metacluster train`.
"""

from __future__ import annotations

from metacluster.device import resolve_device
from metacluster.training.build import build_model_for, data_grid_range
from metacluster.training.evaluation import (
    check_compatible,
    evaluate,
    metric_value,
    predict,
    prepare_inputs,
)
from metacluster.training.loop import (
    LoopStats,
    Schedule,
    cosine_annealing,
    cosine_to_zero,
    run_epochs,
)
from metacluster.training.losses import distill_loss, task_loss
from metacluster.training.train import train_model

__all__ = [
    "LoopStats",
    "Schedule",
    "build_model_for",
    "check_compatible",
    "cosine_annealing",
    "cosine_to_zero",
    "data_grid_range",
    "distill_loss",
    "evaluate",
    "metric_value",
    "predict",
    "prepare_inputs",
    "resolve_device",
    "run_epochs",
    "task_loss",
    "train_model",
]
