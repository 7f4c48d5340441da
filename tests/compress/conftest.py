"""Shared fixtures for the compression tests: a small trained digits KAN and fast configs.

Everything is tiny so each test file runs in seconds on one CPU thread.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from compress.helpers import train_quick
from metacluster.data import Dataset, load_dataset
from metacluster.kan import build_kan
from metacluster.kan.model import KANModel


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def trained_state(digits: Dataset) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_kan("bspline", [64, 16, 10])
    train_quick(model, digits, epochs=8)
    return {"config": model.config(), "state": model.state_dict()}


@pytest.fixture
def small_model(trained_state: dict[str, Any]) -> KANModel:
    """A fresh copy each test (compress must not mutate it; some tests check that)."""
    model = KANModel.from_config(trained_state["config"])
    model.load_state_dict(trained_state["state"])
    return model.eval()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
