"""Small training helper for the compression tests (independent of metacluster.training).

Full-batch-ish Adam on the task loss; enough to give the compressor a trained KAN.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from metacluster.compress import MetaClusterConfig
from metacluster.data.dataset import Dataset
from metacluster.kan.model import KANModel


def train_quick(
    model: KANModel,
    data: Dataset,
    *,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 128,
    seed: int = 0,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.x_train.reshape(data.n_train, -1), data.y_train
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(data.n_train, generator=gen)
        for i in range(0, data.n_train, batch_size):
            idx = perm[i : i + batch_size]
            out = model(x[idx])
            if data.task == "classification":
                loss = F.cross_entropy(out, y[idx])
            else:
                loss = F.mse_loss(out, y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    model.eval()


def fast_config(**overrides: Any) -> MetaClusterConfig:
    base: dict[str, Any] = {
        # These tests exercise the whole pipeline, meta-learner included (the default
        # method, dkm, is that pipeline without stage 1; tests/compress/test_budget.py).
        "method": "metacluster",
        "k": 8,
        "regress_steps": 40,
        "meta_epochs": 2,
        "soft_epochs": 1,
        "soft_min_steps": 0,
        "finetune_epochs": 2,
        "kmeans_iters": 10,
        "kmeans_restarts": 1,
        "device": "cpu",
        "baselines": False,
    }
    base.update(overrides)
    return MetaClusterConfig(**base)
