"""A restricted unpickler for CIFAR python batches: numpy arrays and plain data only.

CIFAR-10/100 "python version" files are pickles (dicts of bytes, lists, ints and
numpy arrays). Unpickling runs whatever callables a file names, so this reader
resolves exactly the globals a numpy array needs (``_reconstruct``, ``ndarray``,
``dtype``) plus the latin-1 bytes shim of protocol-2 pickles, and refuses any
other global with a `DatasetError` before it is ever looked up or called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

from metacluster.errors import DatasetError

# numpy moved `core` to `_core` in 2.0; files written by either name the
# reconstruct function by its module path, so both spellings map to the same
# function (taken from ndarray.__reduce__, which is version-proof).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles use to spell bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DatasetError("refusing pickle: _codecs.encode is only allowed for latin-1 bytes")
    return codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise DatasetError(
                f"refusing to unpickle {module}.{name}: CIFAR batches may only hold "
                "numpy arrays, bytes, strings, lists, ints and dicts"
            )
        return obj


def _check_no_objects(value: Any, where: str) -> None:
    # Object arrays would carry arbitrary Python values; CIFAR never has them.
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise DatasetError(f"{where}: object arrays are not allowed in a CIFAR batch")
    if isinstance(value, dict):
        for v in value.values():
            _check_no_objects(v, where)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_no_objects(v, where)


def load_restricted_pickle(data: bytes, where: str) -> Any:
    """Unpickle `data` allowing only numpy arrays and plain containers.

    `encoding="bytes"` keeps Python 2 strings (the original CIFAR files) as bytes.
    Any refusal or malformed stream raises `DatasetError` naming `where`.
    """
    try:
        value = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DatasetError as exc:
        raise DatasetError(f"{where}: {exc.message}") from None
    except Exception as exc:  # malformed stream: any of a dozen exception types
        raise DatasetError(
            f"{where}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from None
    _check_no_objects(value, where)
    return value
