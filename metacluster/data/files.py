"""Readers for user data files: `.npz`, MNIST IDX and CIFAR-10/100 python batches.

Every reader is offline and safe: `.npz` loads with ``allow_pickle=False``, IDX is
parsed byte by byte, and CIFAR pickles go through a numpy-only unpickler. Any bad
file raises `DatasetError` with one line saying what is wrong.
"""

from __future__ import annotations

import gzip
import math
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from metacluster.data.dataset import Dataset, DatasetMeta, dataset_from_arrays, infer_task
from metacluster.data.safe_pickle import load_restricted_pickle
from metacluster.errors import DatasetError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# The arrays of an .npz may not add up to more than this once uncompressed (read from
# their headers before anything is loaded): a 1 MB zip of zeros can declare gigabytes.
MAX_NPZ_BYTES = 8 << 30
# Streamed validation reads at most this many bytes of one array at a time.
_CHUNK_BYTES = 8 << 20


# -- .npz ----------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    """What an array's .npy header declares: enough to size it without loading it."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read_npy_header(fh: IO[bytes], where: str) -> NpyHeader:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise DatasetError(f"{where}: not a numpy array ({exc})") from None
    if dtype.hasobject:
        raise DatasetError(f"{where}: object arrays are not allowed (they need pickle)")
    if any(d < 0 for d in shape):
        raise DatasetError(f"{where}: negative dimension in {shape}")
    return NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran))


def npz_headers(path: Path) -> dict[str, NpyHeader]:
    """Every array's header, read from the zip without loading any array."""
    out: dict[str, NpyHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as fh:
                    out[info.filename[: -len(".npy")]] = _read_npy_header(fh, path.name)
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise DatasetError(f"{path.name}: not a valid .npz file ({exc})") from None
    return out


def check_npz_size(path: Path, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, NpyHeader]:
    """The headers, after checking that the arrays fit in `max_bytes` uncompressed
    (DatasetError code `dataset_too_large` otherwise); nothing is loaded."""
    headers = npz_headers(path)
    total = sum(h.nbytes for h in headers.values())
    if total > max_bytes:
        raise DatasetError(
            f"{path.name}: its arrays hold {total} bytes uncompressed; at most {max_bytes} "
            "are allowed",
            code="dataset_too_large",
        )
    return headers


def _npz_chunks(
    archive: zipfile.ZipFile, key: str, header: NpyHeader
) -> Iterator[np.ndarray[Any, Any]]:
    """The flat elements of one array, `_CHUNK_BYTES` at a time (order irrelevant)."""
    with archive.open(key + ".npy") as fh:
        _read_npy_header(fh, key)
        left = header.nbytes
        step = max(
            header.dtype.itemsize, _CHUNK_BYTES // header.dtype.itemsize * header.dtype.itemsize
        )
        while left > 0:
            raw = fh.read(min(step, left))
            if not raw:
                raise DatasetError(f"{key}: array data is truncated")
            left -= len(raw)
            yield np.frombuffer(raw, dtype=header.dtype)


def npz_meta(path: Path, max_bytes: int = MAX_NPZ_BYTES) -> DatasetMeta:
    """What `load_npz(path).meta()` says, with the same checks, in bounded memory:
    shapes and dtypes come from the headers, values are checked chunk by chunk (finite
    inputs and targets, labels >= 0 and within n_classes). For the API process, which
    must never hold a whole uploaded data set."""
    headers = check_npz_size(path, max_bytes)
    name = path.stem
    missing = [k for k in NPZ_KEYS if k not in headers]
    if missing:
        raise DatasetError(
            f"{path.name}: missing array(s) {', '.join(missing)}; "
            f"an .npz data set needs {', '.join(NPZ_KEYS)}"
        )
    hx = {k: headers[f"x_{k}"] for k in ("train", "test")}
    hy = {k: headers[f"y_{k}"] for k in ("train", "test")}
    for which, h in hx.items():
        dt = h.dtype
        if not (np.issubdtype(dt, np.number) or dt == np.bool_):
            raise DatasetError(f"{name}: x_{which} must be a numeric array, got dtype {dt}")
        if len(h.shape) < 2:
            raise DatasetError(f"{name}: x_{which} must have shape (n, features...), got {h.shape}")
    if hx["train"].shape[1:] != hx["test"].shape[1:]:
        raise DatasetError(
            f"{name}: x_train and x_test differ in shape: "
            f"{hx['train'].shape[1:]} vs {hx['test'].shape[1:]}"
        )
    for which in ("train", "test"):
        x, y = hx[which], hy[which]
        if not y.shape or x.shape[0] != y.shape[0]:
            raise DatasetError(
                f"{name}: x_{which} has {x.shape[0]} rows but y_{which} has "
                f"{y.shape[0] if y.shape else 0}"
            )
    if hx["train"].shape[0] == 0 or hx["test"].shape[0] == 0:
        raise DatasetError(f"{name}: train and test splits must both be non-empty")
    task = infer_task(np.empty(0, dtype=hy["train"].dtype))
    if infer_task(np.empty(0, dtype=hy["test"].dtype)) != task:
        raise DatasetError(
            f"{name}: y_train and y_test have different kinds "
            f"({hy['train'].dtype} vs {hy['test'].dtype})"
        )
    n_classes: int | None = None
    try:
        with zipfile.ZipFile(path) as archive:
            for which, h in hx.items():
                if np.issubdtype(h.dtype, np.floating) or np.issubdtype(
                    h.dtype, np.complexfloating
                ):
                    for chunk in _npz_chunks(archive, f"x_{which}", h):
                        if not np.isfinite(chunk.astype(np.float32)).all():
                            raise DatasetError(f"{name}: x_{which} contains NaN or infinite values")
            if task == "classification":
                seen = 0
                for which, h in hy.items():
                    if not (len(h.shape) == 1 or (len(h.shape) == 2 and h.shape[1] == 1)):
                        raise DatasetError(
                            f"{name}: class labels y_{which} must have shape (n,), got {h.shape}"
                        )
                    for chunk in _npz_chunks(archive, f"y_{which}", h):
                        labels = chunk.astype(np.int64)
                        if labels.size and labels.min() < 0:
                            raise DatasetError(
                                f"{name}: class labels y_{which} must be >= 0, "
                                f"found {int(labels.min())}"
                            )
                        if labels.size:
                            seen = max(seen, int(labels.max()) + 1)
                n_classes = seen
                if "n_classes" in headers:
                    given_h = headers["n_classes"]
                    if given_h.nbytes > 64:
                        raise DatasetError(f"{name}: n_classes must be a scalar")
                    given = int(next(iter(_npz_chunks(archive, "n_classes", given_h)))[0])
                    if seen > given:
                        raise DatasetError(
                            f"{name}: label {seen - 1} is out of range for {given} classes"
                        )
                    n_classes = given
                n_outputs = n_classes
            else:
                outs = []
                for which, h in hy.items():
                    if len(h.shape) not in (1, 2):
                        raise DatasetError(
                            f"{name}: targets y_{which} must have shape (n,) or (n, outputs), "
                            f"got {h.shape}"
                        )
                    outs.append(1 if len(h.shape) == 1 else h.shape[1])
                    for chunk in _npz_chunks(archive, f"y_{which}", h):
                        if not np.isfinite(chunk.astype(np.float32)).all():
                            raise DatasetError(
                                f"{name}: targets y_{which} contain NaN or infinite values"
                            )
                if outs[0] != outs[1]:
                    raise DatasetError(
                        f"{name}: y_train has {outs[0]} outputs but y_test has {outs[1]}"
                    )
                n_outputs = outs[0]
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
        raise DatasetError(f"{path.name}: not a valid .npz file ({exc})") from None
    return DatasetMeta(
        task,
        int(hx["train"].shape[0]),
        int(hx["test"].shape[0]),
        tuple(int(d) for d in hx["train"].shape[1:]),
        n_classes,
        int(n_outputs),
    )


def load_npz(path: Path, max_bytes: int = MAX_NPZ_BYTES) -> Dataset:
    """`.npz` with x_train, y_train, x_test, y_test (optional scalar n_classes).

    Inputs are used as stored (cast to float32): the user owns their scaling. The
    arrays' uncompressed size is checked against `max_bytes` from their headers first.
    """
    check_npz_size(path, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetError(
                    f"{path.name}: missing array(s) {', '.join(missing)}; "
                    f"an .npz data set needs {', '.join(NPZ_KEYS)}"
                )
            x_train, y_train, x_test, y_test = (npz[k] for k in NPZ_KEYS)
            n_classes = int(npz["n_classes"]) if "n_classes" in npz.files else None
    except DatasetError:
        raise
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise DatasetError(
            f"{path.name}: unreadable .npz (object arrays are not allowed: {exc})"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path.name}: not a valid .npz file ({exc})") from None
    return dataset_from_arrays(path.stem, x_train, y_train, x_test, y_test, n_classes=n_classes)


# -- MNIST IDX -----------------------------------------------------------------
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# stem -> accepted spellings (the original LeCun names and the common "x.idx3" variant)
_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path.name}: cannot read ({exc})") from None


def parse_idx(data: bytes, where: str) -> np.ndarray[Any, Any]:
    """Decode one IDX file (magic 0x0000, type byte, rank byte, big-endian dims)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{where}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DatasetError(f"{where}: unknown IDX element type 0x{data[2]:02x}")
    rank = data[3]
    header = 4 + 4 * rank
    if rank == 0 or len(data) < header:
        raise DatasetError(f"{where}: truncated IDX header")
    dims = struct.unpack(f">{rank}I", data[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DatasetError(
            f"{where}: IDX payload is {len(data) - header} bytes but shape {dims} needs "
            f"{count * dtype.itemsize}"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx(directory: Path, key: str) -> Path:
    for stem in _IDX_FILES[key]:
        for suffix in ("", ".gz"):
            candidate = directory / (stem + suffix)
            if candidate.is_file():
                return candidate
    raise DatasetError(f"{directory}: missing IDX file {_IDX_FILES[key][0]}[.gz]")


def is_idx_dir(directory: Path) -> bool:
    return any(
        (directory / (s + x)).is_file() for s in _IDX_FILES["train_images"] for x in ("", ".gz")
    )


def _idx_images(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # (n, rows, cols) -> (n, 1, rows, cols): channel-first like CIFAR, so conv
    # KANs take it as is and dense KANs flatten it.
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.dtype == np.uint8:  # pixels 0..255 -> [-1, 1], the default KAN grid range
        return arr.astype(np.float32) / 127.5 - 1.0
    return arr.astype(np.float32)


def load_idx(directory: Path) -> Dataset:
    """MNIST-style IDX files (train-images-idx3-ubyte[.gz], ..., t10k-labels-idx1-ubyte[.gz])."""
    arrays = {
        key: parse_idx(_read_maybe_gzip(p), p.name)
        for key in _IDX_FILES
        for p in [_find_idx(directory, key)]
    }
    for key in ("train_labels", "test_labels"):
        if arrays[key].ndim != 1 or not np.issubdtype(arrays[key].dtype, np.integer):
            raise DatasetError(f"{directory.name}: {key} must be a 1-D integer IDX array")
    return dataset_from_arrays(
        directory.name or "idx",
        _idx_images(arrays["train_images"]),
        arrays["train_labels"],
        _idx_images(arrays["test_images"]),
        arrays["test_labels"],
        task="classification",
    )


# -- CIFAR python batches ------------------------------------------------------
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_NAMES = frozenset({*_CIFAR10_TRAIN, "test_batch", "train", "test"})
# The archives are ~170 MB; a member larger than this is not a CIFAR batch.
_MAX_MEMBER_BYTES = 512 << 20


def is_cifar_dir(directory: Path) -> bool:
    return (directory / "test_batch").is_file() or (
        (directory / "train").is_file() and (directory / "test").is_file()
    )


def is_cifar_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def _cifar_batch(
    raw: bytes, where: str, label_key: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    batch = load_restricted_pickle(raw, where)
    if not isinstance(batch, dict):
        raise DatasetError(f"{where}: a CIFAR batch must be a dict, got {type(batch).__name__}")
    # original files are Python 2 pickles (bytes keys); re-saved ones have str keys
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{where}: CIFAR batch needs 'data' and '{label_key}' entries")
    data, labels = batch["data"], batch[label_key]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        raise DatasetError(f"{where}: CIFAR 'data' must be a uint8 array of shape (n, 3072)")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: CIFAR '{label_key}' must be a list of ints") from None
    if y.shape != (data.shape[0],):
        raise DatasetError(f"{where}: {data.shape[0]} images but {y.size} labels")
    x = data.reshape(-1, 3, 32, 32).astype(np.float32) / 127.5 - 1.0
    return x, y


def _cifar_from_members(name: str, members: dict[str, bytes], labels: str) -> Dataset:
    """Build the data set from batch name -> raw pickle bytes (directory or archive)."""
    if "test_batch" in members:
        train = [n for n in _CIFAR10_TRAIN if n in members]
        if not train:
            raise DatasetError(f"{name}: CIFAR-10 set has no data_batch_* files")
        parts = [_cifar_batch(members[n], n, "labels") for n in train]
        x_test, y_test = _cifar_batch(members["test_batch"], "test_batch", "labels")
        n_classes = 10
    elif "train" in members and "test" in members:
        if labels not in ("fine", "coarse"):
            raise DatasetError(f"CIFAR-100 labels must be 'fine' or 'coarse', got {labels!r}")
        key = f"{labels}_labels"
        parts = [_cifar_batch(members["train"], "train", key)]
        x_test, y_test = _cifar_batch(members["test"], "test", key)
        n_classes = 100 if labels == "fine" else 20
    else:
        raise DatasetError(
            f"{name}: no CIFAR-10 (test_batch) or CIFAR-100 (train, test) batches found"
        )
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return dataset_from_arrays(
        name, x_train, y_train, x_test, y_test, task="classification", n_classes=n_classes
    )


def load_cifar(directory: Path, *, labels: str = "fine") -> Dataset:
    """CIFAR-10 (data_batch_1..5 + test_batch) or CIFAR-100 (train + test) directory."""
    members = {
        n: _read_maybe_gzip(directory / n) for n in _CIFAR_NAMES if (directory / n).is_file()
    }
    return _cifar_from_members(directory.name, members, labels)


def load_cifar_archive(path: Path, *, labels: str = "fine") -> Dataset:
    """The downloaded archive itself (cifar-10-python.tar.gz / cifar-100-python.tar.gz).

    Members are read into memory by name; nothing is extracted to disk, so archive
    paths (``../``, links) cannot write anywhere.
    """
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if not info.isfile() or base not in _CIFAR_NAMES:
                    continue
                if info.size > _MAX_MEMBER_BYTES:
                    raise DatasetError(
                        f"{path.name}: member {info.name} is too large for a CIFAR batch"
                    )
                fh = tar.extractfile(info)
                if fh is not None:
                    members[base] = fh.read()
    except DatasetError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path.name}: not a readable CIFAR archive ({exc})") from None
    return _cifar_from_members(path.name, members, labels)
