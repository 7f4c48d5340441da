"""The `Dataset` container every built-in and file reader returns.

Arrays are validated once here (lengths, dtypes, finiteness, label range), so
training, compression and the service can trust a `Dataset` without re-checking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from metacluster.errors import DatasetError

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DatasetMeta:
    """What a compression plan needs to know about a data set without its arrays."""

    task: str
    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    n_classes: int | None
    n_outputs: int

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "n_outputs": self.n_outputs,
        }


@dataclass
class Dataset:
    """A supervised data set split into train and test tensors.

    x_*: float32, shape (n, *input_shape). y_*: int64 (n,) class labels for
    classification, float32 (n, n_outputs) targets for regression.
    """

    name: str
    task: Task
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int | None
    input_shape: tuple[int, ...]

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_features(self) -> int:
        """Input size of a dense model: the product of `input_shape`."""
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        """Output size a model needs: classes, or regression targets."""
        if self.task == "classification":
            assert self.n_classes is not None
            return self.n_classes
        return int(self.y_train.shape[1])

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        raise DatasetError(f"unknown split {split!r}; use 'train' or 'test'")

    def meta(self) -> DatasetMeta:
        return DatasetMeta(
            self.task,
            self.n_train,
            self.n_test,
            tuple(self.input_shape),
            self.n_classes,
            self.n_outputs,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able facts (what the service reports for an uploaded data set)."""
        return {
            "name": self.name,
            "task": self.task,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
        }


def _check_x(name: str, which: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"{name}: {which} must be a numeric array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DatasetError(f"{name}: {which} must have shape (n, features...), got {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError(f"{name}: {which} contains NaN or infinite values")
    return x


def infer_task(y: np.ndarray[Any, Any]) -> Task:
    """Integer (or bool) labels mean classification; float targets mean regression."""
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return "classification"
    if np.issubdtype(y.dtype, np.floating):
        return "regression"
    raise DatasetError(
        f"labels must be integers (classes) or floats (targets), got dtype {y.dtype}"
    )


def _check_labels(name: str, which: str, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{name}: class labels {which} must have shape (n,), got {y.shape}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DatasetError(f"{name}: class labels {which} must be >= 0, found {int(y.min())}")
    return y


def _check_targets(name: str, which: str, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise DatasetError(
            f"{name}: targets {which} must have shape (n,) or (n, outputs), got {y.shape}"
        )
    y = y.astype(np.float32)
    if not np.isfinite(y).all():
        raise DatasetError(f"{name}: targets {which} contain NaN or infinite values")
    return y


def dataset_from_arrays(
    name: str,
    x_train: np.ndarray[Any, Any],
    y_train: np.ndarray[Any, Any],
    x_test: np.ndarray[Any, Any],
    y_test: np.ndarray[Any, Any],
    *,
    task: Task | None = None,
    n_classes: int | None = None,
) -> Dataset:
    """Validate numpy arrays and wrap them as a `Dataset` (task inferred from y's dtype)."""
    x_train = _check_x(name, "x_train", np.asarray(x_train))
    x_test = _check_x(name, "x_test", np.asarray(x_test))
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"{name}: x_train and x_test differ in shape: {x_train.shape[1:]} vs {x_test.shape[1:]}"
        )
    for which, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.ndim == 0 or x.shape[0] != y.shape[0]:
            raise DatasetError(
                f"{name}: x_{which} has {x.shape[0]} rows but y_{which} has "
                f"{y.shape[0] if y.ndim else 0}"
            )
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise DatasetError(f"{name}: train and test splits must both be non-empty")
    task = task or infer_task(y_train)
    if infer_task(y_test) != task:
        raise DatasetError(
            f"{name}: y_train and y_test have different kinds ({y_train.dtype} vs {y_test.dtype})"
        )
    if task == "classification":
        y_train = _check_labels(name, "y_train", y_train)
        y_test = _check_labels(name, "y_test", y_test)
        seen = int(max(y_train.max(), y_test.max())) + 1
        if n_classes is None:
            n_classes = seen
        elif seen > n_classes:
            raise DatasetError(f"{name}: label {seen - 1} is out of range for {n_classes} classes")
    else:
        y_train = _check_targets(name, "y_train", y_train)
        y_test = _check_targets(name, "y_test", y_test)
        if y_train.shape[1] != y_test.shape[1]:
            raise DatasetError(
                f"{name}: y_train has {y_train.shape[1]} outputs but y_test has {y_test.shape[1]}"
            )
        n_classes = None
    return Dataset(
        name=name,
        task=task,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        n_classes=n_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
    )
