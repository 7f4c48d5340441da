"""The losses every training loop of the library uses: task loss and distillation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def task_loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Cross-entropy for classification, MSE for regression."""
    if task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y.reshape(out.shape))


def distill_loss(out: Tensor, teacher: Tensor, task: str, temperature: float) -> Tensor:
    """Distillation towards a teacher's outputs: tempered KL for classification
    (scaled by T^2, Hinton et al.), MSE for regression."""
    if task == "classification":
        t = temperature
        return F.kl_div(
            F.log_softmax(out / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
    return F.mse_loss(out, teacher)


__all__ = ["distill_loss", "task_loss"]
