"""Training and evaluating a KAN whose coefficient tensors come from somewhere else
(a meta-learner, soft-assigned centroids, a codebook): `torch.func.functional_call`
over the library's one training loop and one `predict`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metacluster.compress.codebook import coefficient_names
from metacluster.compress.config import MetaClusterConfig
from metacluster.compress.hooks import StageHooks
from metacluster.data.dataset import Dataset
from metacluster.kan.model import KANModel
from metacluster.training import (
    distill_loss,
    metric_value,
    predict,
    prepare_inputs,
    run_epochs,
    task_loss,
)


def evaluate_model(
    model: KANModel, data: Dataset, device: torch.device, coefs: dict[str, Tensor] | None = None
) -> tuple[str, float]:
    """Test-set metric as `metacluster.training.evaluate`, optionally with substituted
    coefficient tensors (the model's own parameters are left untouched)."""
    out = predict(model, data.x_test.to(device), coefs)
    return metric_value(out, data.y_test, data.task)


def teacher_outputs(model: KANModel, data: Dataset, device: torch.device) -> Tensor:
    """The source model's outputs on the training inputs (the distillation target)."""
    return predict(model, data.x_train.to(device)).detach()


def other_parameters(model: KANModel, compressed: list[str]) -> list[nn.Parameter]:
    """Trainable parameters that are not the coefficient tensors of compressed layers."""
    skip = set(coefficient_names(model, compressed).values())
    return [p for name, p in model.named_parameters() if name not in skip and p.is_floating_point()]


def train_functional(
    stage: str,
    model: KANModel,
    data: Dataset,
    params: list[Tensor],
    coef_fn: Callable[[], dict[str, Tensor]],
    *,
    epochs: int,
    lr: float,
    config: MetaClusterConfig,
    teacher: Tensor | None,
    device: torch.device,
    hooks: StageHooks,
    seed: int,
    extra_loss: Callable[[int], Tensor | None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> float:
    """`run_epochs` over `params` with coefficients from `coef_fn` (functional_call).

    Loss = task loss + config.distill * distillation towards `teacher` (train outputs)
    + extra_loss(epoch). Cosine learning rate to 0. Returns the last epoch's mean loss.
    """
    if epochs == 0 or not params:
        return float("nan")
    x = data.x_train.to(device)
    y = data.y_train.to(device)
    epoch_now = {"epoch": 0}

    def batch_loss(idx: Tensor) -> Tensor:
        xb = prepare_inputs(model, x[idx])
        out = torch.func.functional_call(model, coef_fn(), (xb,))
        loss = task_loss(out, y[idx], data.task)
        if teacher is not None and config.distill > 0:
            loss = loss + config.distill * distill_loss(
                out, teacher[idx], data.task, config.temperature
            )
        if extra_loss is not None:
            extra = extra_loss(epoch_now["epoch"])
            if extra is not None:
                loss = loss + extra
        return loss

    def start_epoch(epoch: int) -> None:
        epoch_now["epoch"] = epoch
        if on_epoch is not None:
            on_epoch(epoch)

    model.train()
    try:
        return run_epochs(
            params,
            int(x.shape[0]),
            batch_loss,
            stage=stage,
            epochs=epochs,
            lr=lr,
            batch_size=config.batch_size,
            seed=seed,
            device=device,
            progress=hooks.report,
            check=lambda: hooks.check(stage),
            on_epoch=start_epoch,
        )
    finally:
        model.eval()


__all__ = ["evaluate_model", "other_parameters", "teacher_outputs", "train_functional"]
