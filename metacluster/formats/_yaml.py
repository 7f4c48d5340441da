"""Safe reading of pykan `_config.yml` files, including numpy scalars and arrays.

pykan's saveckpt dumps numpy values (e.g. after `refine(np.int64(10))`) with
`!!python/object/apply:numpy...` tags that `yaml.safe_load` refuses. This loader
rebuilds those values as plain numbers from their bytes; it never imports or
calls anything named in the file, and any other python tag is still refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from metacluster.errors import FormatError

# Only plain numeric dtypes may be rebuilt; anything else (object, void, ...) is refused.
_NUMERIC_KINDS = set("biuf")
_SCALAR_TAGS = (
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
)
_ARRAY_TAGS = (
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
)
_APPLY = "tag:yaml.org,2002:python/object/apply:"


class _NdarrayName:
    """Stands for the `!!python/name:numpy.ndarray` reference; carries nothing."""


class _SafeDType:
    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype


class PykanConfigLoader(yaml.SafeLoader):
    """SafeLoader plus constructors that turn numpy tags back into numbers only."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    assert isinstance(node, yaml.SequenceNode)
    return list(loader.construct_sequence(node, deep=True))


def _apply_args(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[list[Any], Any]:
    """(args, state) of a python/object/apply node in either of its two spellings."""
    if isinstance(node, yaml.SequenceNode):
        return list(loader.construct_sequence(node, deep=True)), None
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
        return list(value.get("args", [])), value.get("state")
    raise FormatError("malformed numpy value in the pykan config")


def _construct_dtype(loader: yaml.SafeLoader, node: yaml.Node) -> _SafeDType:
    args, state = _apply_args(loader, node)
    if not args or not isinstance(args[0], str):
        raise FormatError("malformed numpy dtype in the pykan config")
    code = args[0]
    if len(code) < 2 or code[0] not in _NUMERIC_KINDS or not code[1:].isdigit():
        raise FormatError(f"numpy dtype {code!r} in the pykan config is not a plain number type")
    order = "<"
    if isinstance(state, list) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
        order = state[1] if state[1] in ("<", ">") else "<"
    return _SafeDType(np.dtype(order + code))


def _construct_scalar(loader: yaml.SafeLoader, node: yaml.Node) -> int | float | bool:
    args, _ = _apply_args(loader, node)
    if len(args) != 2 or not isinstance(args[0], _SafeDType) or not isinstance(args[1], bytes):
        raise FormatError("malformed numpy scalar in the pykan config")
    dtype = args[0].dtype
    if len(args[1]) != dtype.itemsize:
        raise FormatError("numpy scalar in the pykan config has the wrong byte length")
    value = np.frombuffer(args[1], dtype=dtype)[0].item()
    assert isinstance(value, int | float | bool)
    return value


def _construct_array(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    args, state = _apply_args(loader, node)
    if not args or not isinstance(args[0], _NdarrayName):
        raise FormatError("only numpy.ndarray values are accepted in the pykan config")
    # state = (version, shape, dtype, is_fortran, raw bytes)
    if not isinstance(state, list) or len(state) != 5:
        raise FormatError("malformed numpy array in the pykan config")
    _, shape, dtype, fortran, raw = state
    if not isinstance(dtype, _SafeDType) or not isinstance(raw, bytes):
        raise FormatError("malformed numpy array in the pykan config")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise FormatError("malformed numpy array shape in the pykan config")
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != count * dtype.dtype.itemsize:
        raise FormatError("numpy array in the pykan config has the wrong byte length")
    flat = np.frombuffer(raw, dtype=dtype.dtype)
    arr = flat.reshape(tuple(shape), order="F") if fortran else flat.reshape(tuple(shape))
    out = arr.tolist()
    return out if isinstance(out, list) else [out]


def _construct_ndarray_name(loader: yaml.SafeLoader, node: yaml.Node) -> _NdarrayName:
    return _NdarrayName()


PykanConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)
PykanConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/name:numpy.ndarray", _construct_ndarray_name
)
PykanConfigLoader.add_constructor(_APPLY + "numpy.dtype", _construct_dtype)
for _tag in _SCALAR_TAGS:
    PykanConfigLoader.add_constructor(_APPLY + _tag, _construct_scalar)
for _tag in _ARRAY_TAGS:
    PykanConfigLoader.add_constructor(_APPLY + _tag, _construct_array)


# A pykan config has a few hundred nodes (one symbolic function name per edge): this
# bounds what aliases may expand to ("billion laughs") before anything is constructed.
MAX_CONFIG_NODES = 1_000_000
MAX_CONFIG_DEPTH = 64


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    """How many nodes `node` stands for once its aliases are expanded."""
    key = id(node)
    if key in memo:
        return memo[key]
    if depth > MAX_CONFIG_DEPTH:
        raise FormatError(f"the pykan config nests deeper than {MAX_CONFIG_DEPTH} levels")
    memo[key] = MAX_CONFIG_NODES + 1  # a node that contains itself expands without end
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_nodes(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(
            _expanded_nodes(k, memo, depth + 1) + _expanded_nodes(v, memo, depth + 1)
            for k, v in node.value
        )
    else:
        n = 1
    memo[key] = min(n, MAX_CONFIG_NODES + 1)
    return memo[key]


def load_pykan_config(text: str, name: str = "config") -> dict[str, Any]:
    """Parse a pykan `_config.yml`; numpy values come back as Python numbers and lists.

    The node graph is composed first and refused when its aliases would expand to
    more than `MAX_CONFIG_NODES` nodes; only then are values constructed."""
    try:
        loader = PykanConfigLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_nodes(node, {}) > MAX_CONFIG_NODES:
                raise FormatError(
                    f"{name}: the pykan config expands to more than {MAX_CONFIG_NODES} "
                    "values (aliases); refused"
                )
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise FormatError(
            f"{name} is not a pykan config this loader accepts: {exc.problem}{where}"
        ) from exc
    except yaml.YAMLError as exc:
        raise FormatError(f"{name} is not a pykan config this loader accepts: {exc}") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{name} is not a pykan config (expected a mapping)")
    return data
