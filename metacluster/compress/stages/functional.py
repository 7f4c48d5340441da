"""Training and evaluating a KAN whose coefficient tensors come from somewhere else
(a meta-learner, soft-assigned centroids, a codebook): `torch.func.functional_call`
over the library's one training loop and one `predict`.

`TrainingSet` is what every stage trains on: the training split minus a validation
split carved from it (never the test set), the teacher's outputs on it, and extra
inputs only the teacher labels (mixup of training pairs, or noise around training
points). Every stage keeps its best epoch on the validation split and can stop early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metacluster.compress.numeric.codebook import coefficient_names
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.effort import RunBudget
from metacluster.compress.spec.hooks import StageHooks
from metacluster.data.dataset import Dataset
from metacluster.kan.model import KANModel
from metacluster.training import (
    LoopStats,
    Schedule,
    distill_loss,
    metric_value,
    predict,
    prepare_inputs,
    run_epochs,
    task_loss,
)

# Seed offset of the validation split and the augmented inputs.
SEED_DATA = 7


@dataclass
class TrainingSet:
    """The data of every stage, on the run's device."""

    task: str
    x: Tensor  # training inputs (the validation rows removed)
    y: Tensor
    val_x: Tensor
    val_y: Tensor
    teacher: Tensor | None = None  # the source model's outputs on x
    extra_x: Tensor | None = None  # inputs labelled by the teacher only
    extra_teacher: Tensor | None = None
    # Where the teacher was not trained: the validation inputs and noisy copies of them,
    # with its outputs (what sensitivities are measured on: a teacher that memorised
    # its training data scores perfectly on a split carved from it).
    probe_x: Tensor | None = None
    probe_teacher: Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


# A validation split smaller than this is noise, not a signal: on scikit-learn's wine
# (124 training samples, a 12-sample split) holding it out cost 1.5 points over 6 seeds
# at K=8 (docs/compression.md, section 6), so tiny data sets train and judge on all of it.
MIN_VAL_SAMPLES = 64


def make_training_set(
    data: Dataset,
    config: MetaClusterConfig,
    device: torch.device,
    teacher: KANModel | None,
    *,
    max_fit: int | None = None,
    max_val: int | None = None,
    max_probe: int | None = None,
) -> TrainingSet:
    """Carve the validation split, label the training and augmented inputs with the teacher.

    `max_fit` / `max_val`: at most this many training / validation rows (a seeded
    subsample; the held-out rows stay out of training either way), so the teacher's
    outputs and every validation pass cost the same past a data set's size;
    `max_probe`: the sensitivity probe's inputs (half validation rows, half noisy
    copies of them)."""
    gen = torch.Generator().manual_seed(config.seed * 1000 + SEED_DATA)
    n = data.n_train
    n_val = round(config.val_fraction * n)
    if MIN_VAL_SAMPLES <= n_val < n:
        perm = torch.randperm(n, generator=gen)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        val_idx = val_idx[: max_val or None].sort().values
        train_idx = train_idx[: max_fit or None].sort().values
        x, y = data.x_train[train_idx], data.y_train[train_idx]
        val_x, val_y = data.x_train[val_idx], data.y_train[val_idx]
    else:  # no room for a split worth reading: the training data stands in for it
        x, y, val_x, val_y = data.x_train, data.y_train, data.x_train, data.y_train
    out = TrainingSet(data.task, x.to(device), y.to(device), val_x.to(device), val_y.to(device))
    if teacher is None:
        return out
    out.teacher = predict(teacher, out.x).detach()
    probe = out.val_x[: max(1, max_probe // 2) if max_probe else None]
    flat = probe.reshape(probe.shape[0], -1)
    spread = 0.1 * flat.std(0, unbiased=False).clamp_min(1e-6)
    noisy = flat + spread * torch.randn(flat.shape, generator=gen).to(flat.device)
    out.probe_x = torch.cat([probe, noisy.reshape(probe.shape)])
    out.probe_teacher = predict(teacher, out.probe_x).detach()
    n_extra = round(config.augment_factor * out.n) if config.augment != "none" else 0
    if n_extra > 0:
        xs = x.reshape(x.shape[0], -1)
        if config.augment == "mixup":
            i = torch.randint(0, xs.shape[0], (n_extra,), generator=gen)
            j = torch.randint(0, xs.shape[0], (n_extra,), generator=gen)
            lam = torch.rand(n_extra, 1, generator=gen)
            extra = lam * xs[i] + (1 - lam) * xs[j]
        else:  # noise: a tenth of each feature's spread around a training point
            i = torch.randint(0, xs.shape[0], (n_extra,), generator=gen)
            scale = 0.1 * xs.std(0, unbiased=False).clamp_min(1e-6)
            extra = xs[i] + scale * torch.randn(n_extra, xs.shape[1], generator=gen)
        out.extra_x = extra.reshape(n_extra, *x.shape[1:]).to(device)
        out.extra_teacher = predict(teacher, out.extra_x).detach()
    return out


def evaluate_model(
    model: KANModel, data: Dataset, device: torch.device, coefs: dict[str, Tensor] | None = None
) -> tuple[str, float]:
    """Test-set metric as `metacluster.training.evaluate`, optionally with substituted
    coefficient tensors (the model's own parameters are left untouched)."""
    out = predict(model, data.x_test.to(device), coefs)
    return metric_value(out, data.y_test, data.task)


def validation_metric(
    model: KANModel, fit: TrainingSet, coefs: dict[str, Tensor] | None = None
) -> float:
    """The task metric on the validation split (accuracy, or RMSE)."""
    return metric_value(predict(model, fit.val_x, coefs), fit.val_y, fit.task)[1]


def validation_loss(
    model: KANModel, fit: TrainingSet, coefs: dict[str, Tensor] | None = None
) -> float:
    """The task loss on the validation split (what early stopping minimises)."""
    out = predict(model, fit.val_x, coefs)
    return float(task_loss(out, fit.val_y, fit.task))


def probe_loss(
    model: KANModel,
    fit: TrainingSet,
    coefs: dict[str, Tensor] | None = None,
    temperature: float = 2.0,
) -> float:
    """How far the model is from the teacher on the probe inputs (distillation loss), or
    the validation task loss when there is no teacher."""
    if fit.probe_x is None or fit.probe_teacher is None:
        return validation_loss(model, fit, coefs)
    out = predict(model, fit.probe_x, coefs)
    return float(distill_loss(out, fit.probe_teacher, fit.task, temperature))


def other_parameters(model: KANModel, compressed: list[str]) -> list[nn.Parameter]:
    """Trainable parameters that are not the coefficient tensors of compressed layers."""
    skip = set(coefficient_names(model, compressed).values())
    return [p for name, p in model.named_parameters() if name not in skip and p.is_floating_point()]


@dataclass
class _Best:
    loss: float
    state: list[Tensor]
    bad: int = 0


@dataclass(frozen=True)
class StageEnv:
    """What every stage runs with: the config, the device, the caller's hooks and the
    run's budget (None: the stage's epochs alone decide its steps)."""

    config: MetaClusterConfig
    device: torch.device
    hooks: StageHooks
    budget: RunBudget | None = None

    def schedule(
        self, kind: str, epochs: int, lr: float, seed: int, n: int, *, name: str | None = None
    ) -> Schedule:
        """A stage's training schedule (cosine to 0, the config's batch size): the steps
        of `epochs` over `n` rows, capped by the budget's `kind` preset, with validation
        checkpoints spread over them and the time budget's deadline."""
        plain = Schedule(epochs, lr, self.config.batch_size, seed)
        if self.budget is None:
            return plain
        wanted = plain.total_steps(n)
        return Schedule(
            epochs,
            lr,
            self.config.batch_size,
            seed,
            max_steps=self.budget.steps(kind, wanted, self.config.batch_size),
            checks=self.budget.effort.checks,
            deadline=self.budget.deadline(name or kind),
        )


def train_functional(
    stage: str,
    model: KANModel,
    fit: TrainingSet,
    params: list[Tensor],
    coef_fn: Callable[[], dict[str, Tensor]],
    schedule: Schedule,
    env: StageEnv,
    *,
    extra_loss: Callable[[int], Tensor | None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    val_coef_fn: Callable[[], dict[str, Tensor]] | None = None,
) -> float:
    """`run_epochs` over `params` with coefficients from `coef_fn` (functional_call).

    Loss = task loss + config.distill * distillation towards the teacher (on the
    training inputs, and on the augmented ones) + extra_loss(epoch). Cosine learning
    rate to 0. After every epoch the validation loss (with `val_coef_fn`'s
    coefficients: what the next stage will use) is measured; the best epoch's
    parameters are kept, and with config.patience the stage stops after that many
    epochs without improvement. Returns the last epoch's mean training loss.
    """
    config, device, hooks = env.config, env.device, env.hooks
    epochs = schedule.epochs
    if epochs == 0 or not params:
        return float("nan")
    stats = LoopStats()
    epoch_now = {"epoch": 0}
    distill = fit.teacher is not None and config.distill > 0
    extra = distill and fit.extra_x is not None
    n_extra = int(fit.extra_x.shape[0]) if extra and fit.extra_x is not None else 0
    gen = torch.Generator().manual_seed(schedule.seed + 1)

    def batch_loss(idx: Tensor) -> Tensor:
        coefs = coef_fn()
        out = torch.func.functional_call(model, coefs, (prepare_inputs(model, fit.x[idx]),))
        loss = task_loss(out, fit.y[idx], fit.task)
        if distill:
            assert fit.teacher is not None
            loss = loss + config.distill * distill_loss(
                out, fit.teacher[idx], fit.task, config.temperature
            )
        if extra:
            assert fit.extra_x is not None and fit.extra_teacher is not None
            pick = torch.randint(0, n_extra, (int(idx.numel()),), generator=gen).to(device)
            aug = torch.func.functional_call(
                model, coefs, (prepare_inputs(model, fit.extra_x[pick]),)
            )
            loss = loss + config.distill * distill_loss(
                aug, fit.extra_teacher[pick], fit.task, config.temperature
            )
        if extra_loss is not None:
            term = extra_loss(epoch_now["epoch"])
            if term is not None:
                loss = loss + term
        return loss

    def start_epoch(epoch: int) -> None:
        epoch_now["epoch"] = epoch
        if on_epoch is not None:
            on_epoch(epoch)

    with torch.no_grad():  # the starting point is a candidate too: training never hurts
        start = validation_loss(model, fit, (val_coef_fn or coef_fn)())
    best = _Best(start, [p.detach().clone() for p in params])

    def keep_best(epoch: int, _loss: float) -> bool:
        with torch.no_grad():
            coefs = (val_coef_fn or coef_fn)()
            value = validation_loss(model, fit, coefs)
        if value < best.loss:
            best.loss, best.state, best.bad = value, [p.detach().clone() for p in params], 0
            return False
        best.bad += 1
        stop = config.patience > 0 and best.bad >= config.patience
        return stop

    model.train()
    try:
        last = run_epochs(
            params,
            fit.n,
            batch_loss,
            schedule,
            stage=stage,
            device=device,
            progress=hooks.report,
            check=lambda: hooks.check(stage),
            on_epoch=start_epoch,
            on_step=on_step,
            after_epoch=keep_best,
            stats=stats,
        )
    finally:
        model.eval()
    if stats.stopped == "early stopping":  # the stage is over: its progress says done
        end = stats.done if schedule.checks else epochs
        hooks.report(stage, end, end, None)
    if env.budget is not None:
        wanted = Schedule(epochs, schedule.lr, schedule.batch_size, 0).total_steps(fit.n)
        env.budget.log.record(stage, wanted, stats.planned, stats.done, stats.stopped)
    with torch.no_grad():
        for p, saved in zip(params, best.state, strict=True):
            p.copy_(saved)
    return last


__all__ = [
    "StageEnv",
    "TrainingSet",
    "evaluate_model",
    "make_training_set",
    "other_parameters",
    "probe_loss",
    "train_functional",
    "validation_loss",
    "validation_metric",
]
