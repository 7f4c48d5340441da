"""`train_model`: the loop behind `metacluster train`.

Classification minimises cross-entropy and reports accuracy; regression minimises
MSE and reports RMSE. Training is seeded (its own generator for batch order), can be
stopped between steps, and reports progress as (stage, step, total, loss).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from metacluster.data import Dataset
from metacluster.device import resolve_device
from metacluster.errors import CancelledError, ConfigError
from metacluster.training.evaluation import check_compatible, evaluate, prepare_inputs
from metacluster.training.loop import ProgressFn, Schedule, StopFn, cosine_annealing, run_epochs
from metacluster.training.losses import task_loss


def _check_train_args(epochs: int, lr: float, batch_size: int, weight_decay: float) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"learning rate must be a finite number > 0, got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be an integer >= 1, got {batch_size!r}")
    if not (
        isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0
    ):
        raise ConfigError(f"weight decay must be a finite number >= 0, got {weight_decay!r}")


def train_model(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train `model` in place on the train split; return the final metrics.

    AdamW with a per-step cosine decay of the learning rate to 1% of `lr`
    (no warm-up: KAN layers start near identity-free small splines and take a
    large first step well). `seed` fixes the batch order; the model's own
    initialisation is the caller's. The model stays on `device`.

    Returns {"metric", "value" (test), "train_metric", "train_value",
    "train_loss" (last epoch mean), "epochs", "steps", "seconds"}.
    Raises IncompatibleError, ConfigError (bad arguments or divergence) and
    CancelledError (when `should_stop()` turns true between steps).
    """
    _check_train_args(epochs, lr, batch_size, weight_decay)
    dev = resolve_device(device)
    model.to(dev)
    check_compatible(model, data)
    x = prepare_inputs(model, data.x_train)
    y = data.y_train.to(dev)
    if data.task == "regression":
        y = y.to(x.dtype)
    n = int(x.shape[0])
    epoch_of = {"now": 0}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return task_loss(model(x[idx]), y[idx], data.task)

    def check() -> None:
        if should_stop is not None and should_stop():
            raise CancelledError(f"training cancelled at epoch {epoch_of['now'] + 1}/{epochs}")

    def on_epoch(epoch: int) -> None:
        epoch_of["now"] = epoch

    start = time.perf_counter()
    model.train()
    # no warm-up: KAN layers start as small splines and take a large first step well
    schedule = Schedule(epochs, lr, batch_size, seed, weight_decay, cosine_annealing(0.01))
    epoch_loss = run_epochs(
        model.parameters(),
        n,
        batch_loss,
        schedule,
        stage="train",
        device=dev,
        progress=progress,
        check=check,
        on_epoch=on_epoch,
        fail_on_divergence=True,
    )
    seconds = time.perf_counter() - start
    metric, value = evaluate(model, data, split="test")
    _, train_value = evaluate(model, data, split="train")
    return {
        "metric": metric,
        "value": value,
        "train_metric": metric,
        "train_value": train_value,
        "train_loss": epoch_loss,
        "epochs": epochs,
        "steps": epochs * math.ceil(n / batch_size),
        "seconds": seconds,
    }


__all__ = ["train_model"]
