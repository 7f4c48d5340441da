"""The one minibatch loop: `train_model` and every compression stage run their steps here.

The caller supplies the loss of a batch (given its row indices); the loop owns the
optimiser, the learning-rate schedule, the seeded batch order, cancellation between
steps and progress after every epoch.
"""

from __future__ import annotations

import math
import time
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
    decay, minibatch size, the seed of the batch order, the learning-rate schedule.

    `max_steps` caps the optimizer steps (the epochs' steps are an upper bound then);
    `checks` > 0 spreads that many checkpoints (validation, progress) evenly over the
    steps instead of one per epoch; `deadline` (a `time.monotonic()` value) re-plans the
    run to end by then, from the measured time per step.
    """

    epochs: int
    lr: float
    batch_size: int
    seed: int
    weight_decay: float = 0.0
    scheduler: SchedulerFactory = cosine_to_zero
    max_steps: int | None = None
    checks: int = 0
    deadline: float | None = None

    def total_steps(self, n: int) -> int:
        """Optimizer steps over `n` rows: the epochs' steps, capped by max_steps."""
        if self.epochs == 0 or n == 0:
            return 0
        full = self.epochs * math.ceil(n / min(self.batch_size, n))
        return full if self.max_steps is None else min(full, self.max_steps)


@dataclass
class LoopStats:
    """What a loop did: steps planned and run, and why it ended before its plan."""

    planned: int = 0
    done: int = 0
    stopped: str | None = None  # "time budget" or "early stopping"


# Steps timed before a deadline re-plans the rest of the run.
_TIMED_STEPS = 3


class _Loop:
    """One run of `run_epochs`: the step counter, the horizon and the checkpoints."""

    def __init__(self, schedule: Schedule, n: int, opt: torch.optim.Optimizer) -> None:
        self.schedule = schedule
        self.bs = min(schedule.batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.bs)
        self.total = schedule.total_steps(n)
        self.every = (
            max(1, math.ceil(self.total / schedule.checks))
            if schedule.checks > 0
            else self.steps_per_epoch
        )
        self.tick = max(1, self.total // 100)
        self.opt = opt
        self.sched = schedule.scheduler(opt, self.total)
        self.t0 = time.monotonic()

    def replan(self, step: int, stats: LoopStats) -> None:
        """Fewer steps when the measured pace would pass the deadline (the schedule's
        learning rate then decays to its end over the new horizon)."""
        deadline = self.schedule.deadline
        if deadline is None or step != _TIMED_STEPS:
            return
        per_step = (time.monotonic() - self.t0) / step
        fits = step + int(max(0.0, deadline - time.monotonic()) / max(per_step, 1e-9))
        if fits >= self.total:
            return
        self.total = max(step + 1, fits)
        if self.schedule.checks > 0:
            self.every = max(1, math.ceil(self.total / self.schedule.checks))
        self.sched = self.schedule.scheduler(self.opt, self.total)
        self.sched.last_epoch = step - 1
        self.sched.step()
        stats.stopped = "time budget"

    def is_check(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total


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
    on_step: Callable[[int, int], None] | None = None,
    after_epoch: Callable[[int, float], bool] | None = None,
    fail_on_divergence: bool = False,
    stats: LoopStats | None = None,
) -> float:
    """Minibatch AdamW over `params` for `schedule.total_steps(n)` steps over `n` rows.

    `batch_loss(idx)` returns the loss of the rows `idx` (a long tensor on `device`).
    Batch order comes from a generator seeded with `seed`; `check()` runs before every
    step (it raises to cancel); `on_epoch(epoch)` before each pass, `on_step(step,
    total)` before each step; at every checkpoint (each epoch, or `schedule.checks`
    evenly spaced ones) `progress` gets the mean loss since the last one (as epochs done
    of epochs in epoch mode, as steps otherwise) and `after_epoch(i, loss)` returning
    True ends the training early. Returns the last checkpoint's mean loss (NaN when
    there is nothing to train). With `fail_on_divergence` a non-finite loss is a
    ConfigError (a user-facing "lower the learning rate"). `stats` gets the steps run.
    """
    params = list(params)
    stats = stats if stats is not None else LoopStats()
    if schedule.total_steps(n) == 0 or not params:
        return float("nan")
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    loop = _Loop(schedule, n, opt)
    stats.planned = loop.total
    gen = torch.Generator().manual_seed(schedule.seed)
    last, running, seen, step, check_no, epoch = float("nan"), 0.0, 0, 0, 0, 0
    while step < loop.total:
        if on_epoch is not None:
            on_epoch(epoch)
        order = torch.randperm(n, generator=gen).to(device)
        for j in range(loop.steps_per_epoch):
            if step >= loop.total:
                break
            if check is not None:
                check()
            if on_step is not None:
                on_step(step, loop.total)
            idx = order[j * loop.bs : (j + 1) * loop.bs]
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            loop.sched.step()
            step += 1
            stats.done = step
            running += float(loss.detach()) * int(idx.numel())
            seen += int(idx.numel())
            loop.replan(step, stats)
            if not loop.is_check(step):
                if progress is not None and schedule.checks > 0 and step % loop.tick == 0:
                    progress(stage, step, loop.total, None)  # a log's heartbeat
                continue
            last, running, seen = running / max(seen, 1), 0.0, 0
            if fail_on_divergence and not math.isfinite(last):
                raise ConfigError(
                    f"training diverged at epoch {epoch + 1} (loss {last}); lower the learning rate"
                )
            if progress is not None:
                if schedule.checks > 0:
                    progress(stage, step, loop.total, last)
                else:
                    progress(stage, epoch + 1, math.ceil(loop.total / loop.steps_per_epoch), last)
            check_no += 1
            if after_epoch is not None and after_epoch(check_no - 1, last):
                stats.stopped = "early stopping"
                return last
        epoch += 1
    return last


__all__ = [
    "LoopStats",
    "ProgressFn",
    "Schedule",
    "SchedulerFactory",
    "StopFn",
    "cosine_annealing",
    "cosine_to_zero",
    "run_epochs",
]
