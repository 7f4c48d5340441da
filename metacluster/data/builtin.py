"""Built-in offline data sets: scikit-learn's digits and locally generated MNIST-1D.

MNIST-1D is generated with the `mnist1d` package's own generator (never its
download path) and cached as `.npz`, because generation takes a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from metacluster.data.dataset import Dataset, dataset_from_arrays
from metacluster.errors import DatasetError


def load_digits_dataset(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """sklearn's bundled 8x8 digits, stratified split, pixels 0..16 scaled to [-1, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"digits: test fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 8.0 - 1.0
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return dataset_from_arrays("digits", x_train, y_train, x_test, y_test, n_classes=10)


def cache_dir() -> Path:
    """$METACLUSTER_DATA_DIR/cache when set, else ~/.cache/metacluster."""
    root = os.environ.get("METACLUSTER_DATA_DIR")
    return Path(root) / "cache" if root else Path.home() / ".cache" / "metacluster"


def _generate_mnist1d(args: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    from mnist1d.data import get_dataset_args, make_dataset

    view = get_dataset_args()
    for key, value in args.items():
        setattr(view, key, value)
    # make_dataset reseeds the global `random` and numpy generators; restore them
    # so loading data never changes the caller's random streams.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(view)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": np.asarray(raw["x"], dtype=np.float32),
        "y_train": np.asarray(raw["y"], dtype=np.int64),
        "x_test": np.asarray(raw["x_test"], dtype=np.float32),
        "y_test": np.asarray(raw["y_test"], dtype=np.int64),
    }


def _read_cache(path: Path) -> dict[str, np.ndarray[Any, Any]] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # absent or damaged: regenerate


def _write_cache(path: Path, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)  # atomic: concurrent loaders never see half a file
    except OSError:
        # a read-only home still gets its data, just without the cache
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# Generator settings a user may override with "mnist1d?num_samples=10000&seed=1".
MNIST1D_PARAMS = {"num_samples": int, "seed": int, "train_split": float, "shuffle_seq": bool}
# The published data set's size (train + test), made unless `num_samples` says otherwise.
MNIST1D_DEFAULT_SAMPLES = 5000


def load_mnist1d_dataset(**overrides: Any) -> Dataset:
    """MNIST-1D (40 inputs, 10 classes; 4000/1000 split by default), inputs standardised.

    The generator standardises the whole set to zero mean and unit std. The
    default settings reproduce the published data set (generator seed 42).
    """
    unknown = sorted(set(overrides) - set(MNIST1D_PARAMS))
    if unknown:
        raise DatasetError(
            f"mnist1d: unknown option(s) {', '.join(unknown)}; known: {', '.join(MNIST1D_PARAMS)}"
        )
    if overrides.get("num_samples", MNIST1D_DEFAULT_SAMPLES) < 20:
        raise DatasetError("mnist1d: num_samples must be >= 20")
    key = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"mnist1d-{key}.npz"
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d(overrides)
        _write_cache(path, arrays)
    return dataset_from_arrays(
        "mnist1d",
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        n_classes=10,
    )
