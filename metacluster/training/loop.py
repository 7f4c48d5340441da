"""The one minibatch loop: `train_model` and every compression stage run their epochs here.

The caller supplies the loss of a batch (given its row indices); the loop owns the
optimiser, the learning-rate schedule, the seeded batch order, cancellation between
steps and progress after every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from metacluster.errors import ConfigError

ProgressFn = Callable[[str, int, int, float | None], None]
"""progress(stage, step, total, loss): called after every epoch."""
StopFn = Callable[[], bool]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


def cosine_to_zero(
    opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step cosine decay from the base learning rate to 0 (closed form)."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    )


def cosine_annealing(final_fraction: float) -> SchedulerFactory:
    """torch's CosineAnnealingLR down to `final_fraction` of the base learning rate."""

    def make(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        base = float(opt.param_groups[0]["lr"])
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=total_steps, eta_min=base * final_fraction
        )

    return make


@dataclass(frozen=True)
class Schedule:
    """How long and how fast a loop trains: epochs, AdamW's learning rate and weight
    decay, minibatch size, the seed of the batch order, the learning-rate schedule."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    weight_decay: float = 0.0
    scheduler: SchedulerFactory = cosine_to_zero


def run_epochs(
    params: Iterable[Tensor],
    n: int,
    batch_loss: Callable[[Tensor], Tensor],
    schedule: Schedule,
    *,
    stage: str,
    device: torch.device,
    progress: ProgressFn | None = None,
    check: Callable[[], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
    after_epoch: Callable[[int, float], bool] | None = None,
    fail_on_divergence: bool = False,
) -> float:
    """Minibatch AdamW over `params` for `schedule.epochs` passes over `n` rows.

    `batch_loss(idx)` returns the loss of the rows `idx` (a long tensor on `device`).
    Batch order comes from a generator seeded with `seed`; `check()` runs before every
    step (it raises to cancel); `on_epoch(epoch)` before each epoch; `progress` after
    it with the epoch's mean loss; `after_epoch(epoch, loss)` returning True ends the
    training early. Returns the last epoch's mean loss (NaN when there
    is nothing to train). With `fail_on_divergence` a non-finite epoch loss is a
    ConfigError (a user-facing "lower the learning rate").
    """
    params = list(params)
    epochs = schedule.epochs
    if epochs == 0 or not params or n == 0:
        return float("nan")
    bs = min(schedule.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    sched = schedule.scheduler(opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(schedule.seed)
    last = float("nan")
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch)
        order = torch.randperm(n, generator=gen).to(device)
        running = 0.0
        for step in range(steps_per_epoch):
            if check is not None:
                check()
            idx = order[step * bs : (step + 1) * bs]
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            running += float(loss.detach()) * int(idx.numel())
        last = running / n
        if fail_on_divergence and not math.isfinite(last):
            raise ConfigError(
                f"training diverged at epoch {epoch + 1} (loss {last}); lower the learning rate"
            )
        if progress is not None:
            progress(stage, epoch + 1, epochs, last)
        if after_epoch is not None and after_epoch(epoch, last):
            break
    return last


__all__ = [
    "ProgressFn",
    "Schedule",
    "SchedulerFactory",
    "StopFn",
    "cosine_annealing",
    "cosine_to_zero",
    "run_epochs",
]
