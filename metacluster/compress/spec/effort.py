"""How much work a compression run does: the `effort` presets, step budgets that stop
growing with the data set, and the time budget's clock.

A stage's step costs about `batch x W` edge evaluations, W the summed `positions x
edges x coef_dim` of the compressed layers (`work_per_sample`; a conv layer evaluates
each edge at every output position, a dense layer once). Each preset gives every
training stage a budget of edge evaluations; a stage runs the steps its epochs ask
for, at most that budget's steps (never fewer than the preset's floor), so a data set
past a point adds no steps, and a large model gets fewer, costlier steps than a small
one. docs/compression.md gives the measurements that chose the numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metacluster.compress.spec.config import MetaClusterConfig

EFFORTS = ("fast", "default", "best")
# The stages whose steps a budget sizes (each gets a deadline under a time budget).
TRAINING_STAGES = ("meta", "soft", "finetune")


@dataclass(frozen=True)
class Effort:
    """One preset: per training stage a budget of edge evaluations and a floor of steps,
    and how many samples the side computations read."""

    name: str
    units: dict[str, float]  # stage -> edge evaluations (batch x W x steps) at most
    floor: int  # steps a stage may always run, whatever its budget says
    regress_steps: int  # full-batch regression steps at most (cheap: no data)
    checks: int  # validation checkpoints per stage (early stopping, the best state)
    fit_samples: int  # training inputs the stages draw from (teacher outputs on these)
    val_samples: int  # validation inputs (early stopping, the K choice)
    probe_samples: int  # the allocation's sensitivity probe inputs
    kmeans_sample: int  # allocation: K-means fit on at most this many vectors per option
    kmeans_runs: tuple[int, int]  # the K-means stage's Lloyd iterations and restarts, at most
    soft: bool = True  # run the clustering-aware stage (fast skips it: see docs)
    kmeans_stage_sample: int | None = None  # the K-means stage fits on this many vectors
    # The clustering-aware stage runs only where its budget buys at least this many steps
    # (fewer do not anneal: K-means + fine-tuning is better then; see docs)
    soft_min_budget: int = 0


_G = 1e9
_BUDGETED = ("meta", "soft", "finetune", "baseline")
# One row a preset; the columns are Effort's fields, the step budgets (units) first in
# billions of edge evaluations, one column a stage of _BUDGETED.
_PRESET_ROWS: tuple[tuple[Any, ...], ...] = (
    # name, units (G), floor, regress, checks, fit, val, probe, kmeans_sample, kmeans_runs, soft,
    # stage_sample, soft_min_budget
    ("fast", (5, 5, 5, 2), 30, 150, 4, 4_000, 1_000, 512, 2_000, (20, 1), False, 8_000, 0),
    (
        "default",
        (20, 21, 21, 5),
        100,
        600,
        8,
        16_000,
        3_000,
        1_024,
        8_000,
        (50, 3),
        True,
        None,
        150,
    ),
    (
        "best",
        (200, 200, 100, 20),
        500,
        5_000,
        16,
        1_000_000,
        10_000,
        8_192,
        100_000,
        (10_000, 100),
        True,
        None,
        0,
    ),
)


def _preset(name: str, units: tuple[int, ...], *rest: Any) -> Effort:
    budgets = {stage: g * _G for stage, g in zip(_BUDGETED, units, strict=True)}
    return Effort(name, budgets, *rest)


PRESETS: dict[str, Effort] = {row[0]: _preset(*row) for row in _PRESET_ROWS}


def work_per_sample(layers: Iterable[Any]) -> int:
    """W: the edge evaluations of one sample through the compressed layers (objects
    with `edges`, `coef_dim` and optionally `positions`, the evaluations of each edge
    per sample - a conv layer's output positions, 1 when absent: LayerPlan rows)."""
    return max(
        1,
        sum(int(getattr(la, "positions", 1)) * int(la.edges) * int(la.coef_dim) for la in layers),
    )


def runs_soft(effort: Effort, batch: int, work: int) -> bool:
    """Whether this effort runs the clustering-aware stage on a model of this W."""
    return effort.soft and int(effort.units["soft"] / (batch * work)) >= effort.soft_min_budget


def step_cap(effort: Effort, stage: str, batch: int, work: int) -> int:
    """The most steps `stage` runs at this effort: its budget over a step's cost."""
    return max(effort.floor, int(effort.units[stage] / (batch * work)))


@dataclass
class StageLog:
    """Per training stage: steps planned by its epochs, the cap, steps run, why it ended."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, stage: str, wanted: int, planned: int, done: int, stop: str | None) -> None:
        entry: dict[str, Any] = {"steps": done, "planned": planned, "epoch_steps": wanted}
        if planned < wanted:
            entry["capped"] = "step budget"
        if stop is not None:
            entry["stopped"] = stop
            if stop == "time budget":
                entry["note"] = "time budget reached mid-stage: kept the best state so far"
        self.entries[stage] = entry


class Clock:
    """A run's time budget: each training stage gets a deadline from the time left,
    shared among the stages still to come by their planned weights."""

    def __init__(self, budget_s: float | None, reserve: float = 0.15) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s
        self.reserve = reserve  # share kept for K-means, evaluation and writing the file

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def deadline(self, share: float) -> float | None:
        """When a stage taking `share` (0..1] of the training still to run must end."""
        if self.budget_s is None:
            return None
        left = self.budget_s * (1 - self.reserve) - self.elapsed()
        return time.monotonic() + max(0.0, left) * min(1.0, share)


@dataclass
class RunBudget:
    """A run's effort preset, model cost, clock and stage log: what turns a stage's
    epochs into a `Schedule`."""

    effort: Effort
    work: int  # W, see work_per_sample
    clock: Clock
    log: StageLog = field(default_factory=StageLog)
    # Planned training stages still to run, (name, weight): each takes its weight's share
    # of the time left.
    ahead: list[tuple[str, float]] = field(default_factory=list)

    def steps(self, kind: str, wanted: int, batch: int) -> int:
        """Steps of a `kind` stage (meta, soft, finetune, baseline) whose epochs want
        `wanted`: at most the preset's budget."""
        return min(wanted, step_cap(self.effort, kind, batch, self.work))

    def deadline(self, name: str) -> float | None:
        """The deadline of the training stage `name` starting now (None: no time budget)."""
        weights = [w for _, w in self.ahead]
        index = next((i for i, (n, _) in enumerate(self.ahead) if n == name), None)
        if index is None:
            return self.clock.deadline(1.0)
        share = weights[index] / max(sum(weights[index:]), 1e-9)
        del self.ahead[: index + 1]
        return self.clock.deadline(share)


def planned_steps(
    effort: Effort, config: MetaClusterConfig, kind: str, work: int, n_train: int | None
) -> int:
    """The steps a training stage will plan (its epochs' steps over the training split,
    capped), from the data set's size; without it, the cap."""
    cap = step_cap(effort, kind, config.batch_size, work)
    if n_train is None:
        return cap
    n_fit = max(1, min(round(n_train * (1 - config.val_fraction)), effort.fit_samples))
    per_epoch = math.ceil(n_fit / min(config.batch_size, n_fit))
    epochs: int = {
        "meta": config.meta_epochs,
        "soft": config.soft_epochs_for(n_fit),
        "finetune": config.finetune_epochs,
        "baseline": config.finetune_epochs,
    }[kind]
    return min(cap, epochs * per_epoch)


def stage_weight(
    config: MetaClusterConfig, name: str, work: int, n_train: int | None
) -> float | None:
    """A stage visit's expected cost in giga edge evaluations (None: not a stage this
    module prices), so progress and the time budget share the run by cost."""
    effort = PRESETS[config.effort]
    batch = config.batch_size
    if name == "soft" and not runs_soft(effort, batch, work):
        return 0.0
    if name in ("meta", "soft", "finetune"):
        return float(planned_steps(effort, config, name, work, n_train) * batch * work / _G)
    if name == "regress":
        return float(min(config.regress_steps, effort.regress_steps) * work * 4 / _G)
    return None


# The smallest time budget `plan` accepts: fixed seconds plus these per giga edge
# evaluations of the fast preset's least work. A lower bound, not a promise: for MNIST
# 784-64-10 it says 9.5 s, where effort fast took 17 s on the quiet 2-core host.
FIXED_SECONDS = 5.0
SECONDS_PER_GIGA_UNIT = 0.5


def minimum_seconds(work: int, batch: int, samples: int) -> float:
    """A time budget too small for `fast`: fixed costs plus the fast preset's floor of
    training steps at a 2-core host's pace."""
    fast = PRESETS["fast"]
    stages = ("soft", "finetune") if fast.soft else ("finetune",)
    units = sum(min(fast.floor, step_cap(fast, s, batch, work)) for s in stages)
    units *= batch * work
    units += 3 * min(samples, fast.fit_samples) * work  # teacher outputs and evaluations
    return FIXED_SECONDS + SECONDS_PER_GIGA_UNIT * units / _G


__all__ = [
    "EFFORTS",
    "PRESETS",
    "TRAINING_STAGES",
    "Clock",
    "Effort",
    "RunBudget",
    "StageLog",
    "minimum_seconds",
    "planned_steps",
    "runs_soft",
    "stage_weight",
    "step_cap",
    "work_per_sample",
]
