"""`.npz` read in bounded memory: sizes from the array headers, values streamed.

`npz_meta` (what the API uses) must agree with `load_npz(...).meta()` (what the worker
uses) on every data set, valid or not, and refuse a decompression bomb from its
headers alone.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metacluster.data.files import check_npz_size, load_npz, npz_meta
from metacluster.errors import DatasetError

RNG = np.random.default_rng(0)


def _save(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def _base(n: int = 20, m: int = 8) -> dict[str, Any]:
    return {
        "x_train": RNG.uniform(-1, 1, (n, 3)).astype(np.float32),
        "y_train": np.arange(n) % 3,
        "x_test": RNG.uniform(-1, 1, (m, 3)).astype(np.float32),
        "y_test": np.arange(m) % 3,
    }


VALID: dict[str, dict[str, Any]] = {
    "classification": _base(),
    "n_classes_given": {**_base(), "n_classes": np.array(7)},
    "bool_labels": {**_base(), "y_train": np.arange(20) % 2 == 0, "y_test": np.arange(8) % 2 == 1},
    "column_labels": {
        **_base(),
        "y_train": (np.arange(20) % 3)[:, None],
        "y_test": (np.arange(8) % 3)[:, None],
    },
    "regression_1d": {**_base(), "y_train": RNG.normal(size=20), "y_test": RNG.normal(size=8)},
    "regression_2d": {
        **_base(),
        "y_train": RNG.normal(size=(20, 2)),
        "y_test": RNG.normal(size=(8, 2)),
    },
    "images_uint8": {
        **_base(),
        "x_train": RNG.integers(0, 255, (20, 1, 4, 4), dtype=np.uint8),
        "x_test": RNG.integers(0, 255, (8, 1, 4, 4), dtype=np.uint8),
    },
    "fortran_float64": {
        **_base(),
        "x_train": np.asfortranarray(RNG.uniform(size=(20, 3))),
        "x_test": np.asfortranarray(RNG.uniform(size=(8, 3))),
    },
}

INVALID: dict[str, dict[str, Any]] = {
    "missing_y_test": {k: v for k, v in _base().items() if k != "y_test"},
    "nan_input": {**_base(), "x_test": np.full((8, 3), np.nan, np.float32)},
    "inf_target": {**_base(), "y_train": np.full(20, np.inf), "y_test": np.zeros(8)},
    "negative_label": {**_base(), "y_test": -np.ones(8, np.int64)},
    "label_over_n_classes": {**_base(), "n_classes": np.array(2)},
    "rows_differ": {**_base(), "y_train": np.zeros(19, np.int64)},
    "shapes_differ": {**_base(), "x_test": np.zeros((8, 4), np.float32)},
    "flat_x": {**_base(), "x_train": np.zeros(20, np.float32)},
    "empty_test": {
        **_base(),
        "x_test": np.zeros((0, 3), np.float32),
        "y_test": np.zeros(0, np.int64),
    },
    "kinds_differ": {**_base(), "y_test": np.zeros(8)},
    "string_x": {**_base(), "x_train": np.array([["a"] * 3] * 20)},
    "labels_2d": {**_base(), "y_train": np.zeros((20, 2), np.int64)},
    "targets_3d": {**_base(), "y_train": np.zeros((20, 2, 2)), "y_test": np.zeros((8, 2, 2))},
    "outputs_differ": {**_base(), "y_train": np.zeros((20, 2)), "y_test": np.zeros((8, 3))},
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_meta_from_headers_equals_the_loaded_meta(tmp_path: Path, name: str) -> None:
    path = _save(tmp_path / f"{name}.npz", **VALID[name])
    assert npz_meta(path) == load_npz(path).meta()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_what_the_loader_refuses_the_meta_reader_refuses(tmp_path: Path, name: str) -> None:
    path = _save(tmp_path / f"{name}.npz", **INVALID[name])
    with pytest.raises(DatasetError) as loaded:
        load_npz(path)
    with pytest.raises(DatasetError) as streamed:
        npz_meta(path)
    assert streamed.value.code == loaded.value.code == "invalid_dataset"


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, **{**_base(), "x_train": np.array([object()] * 20).reshape(20, 1)})
    with pytest.raises(DatasetError, match="object arrays"):
        npz_meta(path)


def _declared_bomb(path: Path, rows: int) -> Path:
    """An .npz whose x_train header declares (rows, 64) float64 but holds no data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (rows, 64)}
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy", header.getvalue())  # magic + header, no data
        for key, value in _base().items():
            if key != "x_train":
                buf = io.BytesIO()
                np.save(buf, value)
                zf.writestr(f"{key}.npy", buf.getvalue())
    return path


def test_a_bomb_is_refused_from_its_headers_alone(tmp_path: Path) -> None:
    path = _declared_bomb(tmp_path / "bomb.npz", 4_000_000)  # 2 GB declared, a few KB on disk
    assert path.stat().st_size < 10_000
    for reader in (check_npz_size, npz_meta, load_npz):
        with pytest.raises(DatasetError, match="uncompressed") as info:
            reader(path, max_bytes=1 << 30)
        assert info.value.code == "dataset_too_large"


def test_a_real_compressed_bomb_is_refused(tmp_path: Path) -> None:
    zeros = np.zeros((1_000_000, 64), np.float32)  # 256 MB, a ~250 KB zip
    path = tmp_path / "zeros.npz"
    np.savez_compressed(
        path,
        x_train=zeros,
        y_train=np.zeros(10**6, np.int64),
        x_test=zeros[:4],
        y_test=np.zeros(4, np.int64),
    )
    assert path.stat().st_size < 2 << 20
    with pytest.raises(DatasetError, match="uncompressed"):
        npz_meta(path, max_bytes=64 << 20)
    # under the limit it is read (streamed) and summarised
    meta = npz_meta(path, max_bytes=1 << 30)
    assert (meta.n_train, meta.n_test, meta.input_shape, meta.n_classes) == (10**6, 4, (64,), 1)


def test_truncated_array_data_is_an_error(tmp_path: Path) -> None:
    path = _declared_bomb(tmp_path / "short.npz", 100)
    with pytest.raises(DatasetError):
        npz_meta(path)
    with pytest.raises(DatasetError):
        load_npz(path)
