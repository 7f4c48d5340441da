"""`load_dataset(spec)`: one entry point for built-in names, equations and files.

A spec is ``digits``, ``mnist1d``, ``eq:<name>`` or a path, optionally followed
by ``?key=value&...`` options (e.g. ``eq:xy?n_train=2000&noise=0.01``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from metacluster.data.builtin import (
    MNIST1D_DEFAULT_SAMPLES,
    MNIST1D_PARAMS,
    load_digits_dataset,
    load_mnist1d_dataset,
)
from metacluster.data.dataset import Dataset, dataset_from_arrays
from metacluster.data.equations import (
    DEFAULT_N_TEST,
    DEFAULT_N_TRAIN,
    EQUATIONS,
    make_equation_data,
)
from metacluster.data.files import (
    is_cifar_archive,
    is_cifar_dir,
    is_idx_dir,
    load_cifar,
    load_cifar_archive,
    load_idx,
    load_npz,
)
from metacluster.errors import DatasetError

BUILTIN_DATASETS = ("digits", "mnist1d", "eq:<name>")
_EQ_PARAMS = {"n_train": int, "n_test": int, "noise": float, "seed": int}
_DIGITS_PARAMS = {"test_fraction": float}
_CIFAR_PARAMS = {"labels": str}


def _parse_options(
    spec: str, query: str, types: Mapping[str, Callable[[str], Any]]
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        kind = types.get(key)
        if kind is None:
            known = ", ".join(types) or "none"
            raise DatasetError(f"{spec}: unknown option {key!r}; known options: {known}")
        try:
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false"):
                    raise ValueError(raw)
                options[key] = raw.lower() in ("1", "true")
            else:
                options[key] = kind(raw)
        except ValueError:
            raise DatasetError(
                f"{spec}: option {key}={raw!r} is not a valid {kind.__name__}"
            ) from None
    return options


def _load_path(path: Path, spec: str, query: str) -> Dataset:
    if path.is_file():
        if path.suffix == ".npz":
            _parse_options(spec, query, {})
            return load_npz(path)
        if is_cifar_archive(path):
            return load_cifar_archive(path, **_parse_options(spec, query, _CIFAR_PARAMS))
        # a single IDX / CIFAR file names the directory that holds the set
        parent = path.parent
        if is_idx_dir(parent) and "idx" in path.name:
            _parse_options(spec, query, {})
            return load_idx(parent)
        if is_cifar_dir(parent):
            return load_cifar(parent, **_parse_options(spec, query, _CIFAR_PARAMS))
        raise DatasetError(
            f"{path.name}: unsupported data file; use .npz, MNIST IDX files, or CIFAR python "
            "batches (a directory or the .tar.gz)"
        )
    if path.is_dir():
        if is_idx_dir(path):
            _parse_options(spec, query, {})
            return load_idx(path)
        if is_cifar_dir(path):
            return load_cifar(path, **_parse_options(spec, query, _CIFAR_PARAMS))
        raise DatasetError(
            f"{path}: directory holds neither MNIST IDX files nor CIFAR python batches"
        )
    raise DatasetError(
        f"no such data set or file: {spec!r}; built-ins are {', '.join(BUILTIN_DATASETS)}"
    )


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """Load a built-in data set or a data file (see module docstring).

    `seed` fixes everything random about a built-in: the digits split and the
    equation samples (MNIST-1D keeps its published generator seed unless
    ``mnist1d?seed=N`` is given). Bad specs and files raise `DatasetError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("data set spec must be a non-empty string")
    spec = spec.strip()
    as_path = Path(spec).expanduser()
    if as_path.exists():
        return _load_path(as_path, spec, "")
    base, _, query = spec.partition("?")
    if base == "digits":
        return load_digits_dataset(seed=seed, **_parse_options(spec, query, _DIGITS_PARAMS))
    if base == "mnist1d":
        return load_mnist1d_dataset(**_parse_options(spec, query, MNIST1D_PARAMS))
    if base.startswith("eq:"):
        name = base[3:]
        if name not in EQUATIONS:
            raise DatasetError(f"unknown equation {name!r}; known: {', '.join(EQUATIONS)}")
        options = {"seed": seed, **_parse_options(spec, query, _EQ_PARAMS)}
        arrays = make_equation_data(name, **options)
        return dataset_from_arrays(base, *(a.numpy() for a in arrays), task="regression")
    return _load_path(Path(base).expanduser(), spec, query)


def is_builtin(spec: str) -> bool:
    """True for a built-in name (``digits``, ``mnist1d``, ``eq:<name>``, with options),
    never for a path: a service must not let a job name a file on its disk."""
    name = spec.split("?", 1)[0]
    if name in ("digits", "mnist1d"):
        return True
    return name.startswith("eq:") and len(name) > 3 and "/" not in name and "\\" not in name


def builtin_sample_count(spec: str) -> int | None:
    """Samples (train + test) a generated built-in spec asks for; None for fixed sets.

    Read from the spec's options with the loaders' own defaults, before anything is
    generated, so a caller can refuse a huge request cheaply. Values the loader cannot
    parse are left to it (it raises `DatasetError`); a repeated option counts at its
    largest, so no spelling slips past a cap.
    """
    name, _, query = spec.partition("?")
    defaults: dict[str, int]
    if name.startswith("eq:"):
        defaults = {"n_train": DEFAULT_N_TRAIN, "n_test": DEFAULT_N_TEST}
    elif name == "mnist1d":
        defaults = {"num_samples": MNIST1D_DEFAULT_SAMPLES}
    else:
        return None
    given: dict[str, int] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in defaults:
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        given[key] = max(value, given.get(key, value))
    return sum({**defaults, **given}.values())
