"""User data files: .npz, MNIST IDX and CIFAR python batches, good and bad."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from metacluster.data import load_dataset
from metacluster.data.safe_pickle import load_restricted_pickle
from metacluster.errors import DatasetError

rng = np.random.default_rng(0)


def _npz(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return str(path)


class TestNpz:
    def test_classification_inferred_from_integer_labels(self, tmp_path: Path) -> None:
        spec = _npz(
            tmp_path / "cls.npz",
            x_train=rng.normal(size=(20, 3, 4)),
            y_train=rng.integers(0, 3, 20),
            x_test=rng.normal(size=(6, 3, 4)),
            y_test=np.array([0, 1, 2, 3, 0, 1]),
        )
        d = load_dataset(spec)
        assert d.task == "classification" and d.n_classes == 4
        assert d.input_shape == (3, 4) and d.x_train.dtype == torch.float32
        assert d.y_test.tolist() == [0, 1, 2, 3, 0, 1]

    def test_regression_inferred_from_float_targets(self, tmp_path: Path) -> None:
        y = rng.normal(size=10).astype(np.float64)
        spec = _npz(
            tmp_path / "reg.npz",
            x_train=rng.normal(size=(10, 2)),
            y_train=y,
            x_test=rng.normal(size=(4, 2)),
            y_test=rng.normal(size=4),
        )
        d = load_dataset(spec)
        assert d.task == "regression" and d.n_classes is None
        assert d.y_train.shape == (10, 1) and d.y_train.dtype == torch.float32
        np.testing.assert_allclose(d.y_train[:, 0].numpy(), y, rtol=1e-6)

    def test_explicit_n_classes(self, tmp_path: Path) -> None:
        spec = _npz(
            tmp_path / "k.npz",
            x_train=np.zeros((4, 2)),
            y_train=np.array([0, 1, 0, 1]),
            x_test=np.zeros((2, 2)),
            y_test=np.array([1, 0]),
            n_classes=np.array(10),
        )
        assert load_dataset(spec).n_classes == 10

    @pytest.mark.parametrize(
        ("arrays", "message"),
        [
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.zeros(4, np.int64),
                    "x_test": np.zeros((2, 2)),
                },
                "missing array.*y_test",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.zeros(3, np.int64),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2, np.int64),
                },
                "4 rows but y_train has 3",
            ),
            (
                {
                    "x_train": np.full((4, 2), np.nan),
                    "y_train": np.zeros(4, np.int64),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2, np.int64),
                },
                "NaN",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.array([0.0, np.inf, 1, 2]),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2),
                },
                "NaN or infinite",
            ),
            (
                {
                    "x_train": np.array(["a", "b"]),
                    "y_train": np.zeros(2, np.int64),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2, np.int64),
                },
                "numeric",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.array(["a"] * 4),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2, np.int64),
                },
                "labels must be",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.zeros(4, np.int64),
                    "x_test": np.zeros((2, 3)),
                    "y_test": np.zeros(2, np.int64),
                },
                "differ in shape",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.array([0, -1, 0, 1]),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2, np.int64),
                },
                ">= 0",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.zeros(4, np.int64),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.zeros(2),
                },
                "different kinds",
            ),
            (
                {
                    "x_train": np.zeros((4, 2)),
                    "y_train": np.zeros(4, np.int64),
                    "x_test": np.zeros((2, 2)),
                    "y_test": np.array([1, 9]),
                    "n_classes": np.array(5),
                },
                "out of range for 5 classes",
            ),
        ],
    )
    def test_bad_contents(self, tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
        spec = _npz(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DatasetError, match=message):
            load_dataset(spec)

    def test_object_arrays_are_refused_without_unpickling(self, tmp_path: Path) -> None:
        spec = _npz(
            tmp_path / "obj.npz",
            x_train=np.array([{"a": 1}], dtype=object),
            y_train=np.zeros(1, np.int64),
            x_test=np.zeros((1, 1)),
            y_test=np.zeros(1, np.int64),
        )
        with pytest.raises(DatasetError, match="object arrays are not allowed"):
            load_dataset(spec)

    def test_not_a_zip(self, tmp_path: Path) -> None:
        path = tmp_path / "junk.npz"
        path.write_bytes(b"this is not a zip archive")
        with pytest.raises(DatasetError, match=r"junk\.npz"):
            load_dataset(str(path))

    def test_unsupported_file_type(self, tmp_path: Path) -> None:
        path = tmp_path / "data.csv"
        path.write_text("1,2,3\n")
        with pytest.raises(DatasetError, match="unsupported data file"):
            load_dataset(str(path))


# -- IDX -------------------------------------------------------------------------
def _idx_bytes(arr: np.ndarray[Any, Any], type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_idx_dir(root: Path, *, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, Any]:
    root.mkdir()
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in data.items():
        raw = _idx_bytes(arr)
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (root / name).write_bytes(raw)
    return data


class TestIdx:
    @pytest.mark.parametrize("gz", [False, True])
    def test_reads_directory(self, tmp_path: Path, gz: bool) -> None:
        data = _write_idx_dir(tmp_path / "mnist", gz=gz)
        d = load_dataset(str(tmp_path / "mnist"))
        assert d.task == "classification" and d.input_shape == (1, 4, 5)
        expected = data["train-images-idx3-ubyte"].astype(np.float32) / 127.5 - 1.0
        np.testing.assert_allclose(d.x_train[:, 0].numpy(), expected, rtol=1e-6)
        assert d.y_test.tolist() == data["t10k-labels-idx1-ubyte"].tolist()

    def test_path_of_one_file_names_its_directory(self, tmp_path: Path) -> None:
        _write_idx_dir(tmp_path / "m", gz=False)
        d = load_dataset(str(tmp_path / "m" / "train-images-idx3-ubyte"))
        assert d.n_train == 12 and d.n_test == 5

    def test_float_idx(self, tmp_path: Path) -> None:
        arr = rng.normal(size=(3, 2)).astype(np.float32)
        from metacluster.data.files import parse_idx

        out = parse_idx(_idx_bytes(arr, 0x0D), "x")
        np.testing.assert_array_equal(out, arr)

    def test_wrong_magic(self, tmp_path: Path) -> None:
        _write_idx_dir(tmp_path / "m", gz=False)
        (tmp_path / "m" / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
        with pytest.raises(DatasetError, match="bad magic"):
            load_dataset(str(tmp_path / "m"))

    def test_truncated_payload(self, tmp_path: Path) -> None:
        _write_idx_dir(tmp_path / "m", gz=False)
        path = tmp_path / "m" / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-7])
        with pytest.raises(DatasetError, match="payload is"):
            load_dataset(str(tmp_path / "m"))

    def test_corrupt_gzip(self, tmp_path: Path) -> None:
        _write_idx_dir(tmp_path / "m", gz=True)
        path = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
        path.write_bytes(path.read_bytes()[:12])
        with pytest.raises(DatasetError, match="cannot read"):
            load_dataset(str(tmp_path / "m"))

    def test_missing_file(self, tmp_path: Path) -> None:
        _write_idx_dir(tmp_path / "m", gz=False)
        os.remove(tmp_path / "m" / "t10k-images-idx3-ubyte")
        with pytest.raises(DatasetError, match="missing IDX file t10k-images"):
            load_dataset(str(tmp_path / "m"))

    def test_label_count_mismatch(self, tmp_path: Path) -> None:
        _write_idx_dir(tmp_path / "m", gz=False)
        (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
        with pytest.raises(DatasetError, match="12 rows but y_train has 3"):
            load_dataset(str(tmp_path / "m"))


# -- CIFAR -----------------------------------------------------------------------
def _cifar_batch(
    n: int, label_key: str, n_classes: int, *, bytes_keys: bool, protocol: int
) -> bytes:
    def key(s: str) -> str | bytes:
        return s.encode() if bytes_keys else s

    batch = {
        key("batch_label"): key("training batch 1 of 5"),
        key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        key(label_key): [int(v) for v in rng.integers(0, n_classes, n)],
        key("filenames"): [key(f"img_{i}.png") for i in range(n)],
    }
    return pickle.dumps(batch, protocol=protocol)


class TestCifar:
    @pytest.mark.parametrize(("bytes_keys", "protocol"), [(True, 2), (False, 2), (False, 4)])
    def test_cifar10_directory(self, tmp_path: Path, bytes_keys: bool, protocol: int) -> None:
        root = tmp_path / "cifar-10-batches-py"
        root.mkdir()
        for i in (1, 2):
            (root / f"data_batch_{i}").write_bytes(
                _cifar_batch(4, "labels", 10, bytes_keys=bytes_keys, protocol=protocol)
            )
        test_raw = _cifar_batch(3, "labels", 10, bytes_keys=bytes_keys, protocol=protocol)
        (root / "test_batch").write_bytes(test_raw)
        d = load_dataset(str(root))
        assert (d.n_train, d.n_test, d.n_classes) == (8, 3, 10)
        assert d.input_shape == (3, 32, 32)
        ref = pickle.loads(test_raw)  # our own file: trusted in the test only
        data_key = b"data" if bytes_keys else "data"
        expected = ref[data_key].reshape(-1, 3, 32, 32).astype(np.float32) / 127.5 - 1.0
        np.testing.assert_allclose(d.x_test.numpy(), expected, rtol=1e-6)

    def test_cifar100_fine_and_coarse(self, tmp_path: Path) -> None:
        root = tmp_path / "cifar-100-python"
        root.mkdir()
        for name in ("train", "test"):
            raw = pickle.loads(_cifar_batch(4, "fine_labels", 100, bytes_keys=True, protocol=2))
            raw[b"coarse_labels"] = [1, 2, 3, 4]
            (root / name).write_bytes(pickle.dumps(raw, protocol=2))
        assert load_dataset(str(root)).n_classes == 100
        coarse = load_dataset(f"{root}?labels=coarse")
        assert coarse.n_classes == 20 and coarse.y_train.tolist() == [1, 2, 3, 4]

    def test_cifar10_archive_read_without_extracting(self, tmp_path: Path) -> None:
        import io
        import tarfile

        archive = tmp_path / "cifar-10-python.tar.gz"
        members = {
            "cifar-10-batches-py/data_batch_1": _cifar_batch(
                5, "labels", 10, bytes_keys=True, protocol=2
            ),
            "cifar-10-batches-py/test_batch": _cifar_batch(
                2, "labels", 10, bytes_keys=True, protocol=2
            ),
            # a path-escaping member is only read into memory by its base name
            "../escape/data_batch_2": b"never read",
            "cifar-10-batches-py/readme.html": b"<html/>",
        }
        with tarfile.open(archive, "w:gz") as tar:
            for name, raw in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        with pytest.raises(DatasetError, match="data_batch_2: not a readable CIFAR pickle"):
            load_dataset(str(archive))
        assert not (tmp_path.parent / "escape").exists()
        with tarfile.open(archive, "w:gz") as tar:
            for name, raw in members.items():
                if not name.startswith(".."):
                    info = tarfile.TarInfo(name)
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))
        d = load_dataset(str(archive))
        assert (d.n_train, d.n_test, d.n_classes) == (5, 2, 10)
        assert d.input_shape == (3, 32, 32)

    def test_corrupt_archive(self, tmp_path: Path) -> None:
        archive = tmp_path / "cifar-10-python.tar.gz"
        archive.write_bytes(gzip.compress(b"not a tar archive at all")[:20])
        with pytest.raises(DatasetError, match="not a readable CIFAR archive"):
            load_dataset(str(archive))

    def test_bad_cifar_data_shape(self, tmp_path: Path) -> None:
        root = tmp_path / "c"
        root.mkdir()
        good = _cifar_batch(2, "labels", 10, bytes_keys=True, protocol=2)
        (root / "data_batch_1").write_bytes(good)
        (root / "test_batch").write_bytes(
            pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2)
        )
        with pytest.raises(DatasetError, match=r"shape \(n, 3072\)"):
            load_dataset(str(root))


class _Evil:
    """Unpickling this would create a marker file (proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class TestRestrictedUnpickler:
    def test_refuses_any_other_global_without_running_it(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        payload = pickle.dumps({b"data": _Evil(marker)}, protocol=2)
        with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|os)\.system"):
            load_restricted_pickle(payload, "evil")
        assert not marker.exists()

    def test_evil_cifar_directory(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        root = tmp_path / "c"
        root.mkdir()
        (root / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}))
        (root / "test_batch").write_bytes(
            _cifar_batch(1, "labels", 10, bytes_keys=True, protocol=2)
        )
        with pytest.raises(DatasetError, match="data_batch_1: refusing to unpickle"):
            load_dataset(str(root))
        assert not marker.exists()

    @pytest.mark.parametrize(
        "glob", [("builtins", "eval"), ("numpy", "load"), ("collections", "OrderedDict")]
    )
    def test_refuses_globals_by_name(self, glob: tuple[str, str]) -> None:
        payload = b"\x80\x02c" + f"{glob[0]}\n{glob[1]}\n".encode() + b"."
        with pytest.raises(DatasetError, match=f"refusing to unpickle {glob[0]}.{glob[1]}"):
            load_restricted_pickle(payload, "x")

    def test_codecs_shim_only_allows_latin1(self) -> None:
        payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
        with pytest.raises(DatasetError, match="latin-1"):
            load_restricted_pickle(payload, "x")

    def test_object_arrays_refused(self) -> None:
        payload = pickle.dumps({"data": np.array([1, "a"], dtype=object)}, protocol=2)
        with pytest.raises(DatasetError, match="object arrays"):
            load_restricted_pickle(payload, "x")

    def test_plain_data_and_arrays_round_trip(self) -> None:
        value = {b"k": [1, 2, b"x", "y"], "arr": np.arange(6, dtype=np.float32).reshape(2, 3)}
        out = load_restricted_pickle(pickle.dumps(value, protocol=2), "x")
        assert out[b"k"] == [1, 2, b"x", "y"]
        np.testing.assert_array_equal(out["arr"], value["arr"])

    def test_garbage_stream(self) -> None:
        with pytest.raises(DatasetError, match="not a readable CIFAR pickle"):
            load_restricted_pickle(b"\x80\x02}q\x00(", "x")
