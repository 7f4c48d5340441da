"""The spec's floor: how a knob is declared, the option types of methods, the default.

Everything a run's configuration is made of, and nothing that runs: `knob(...)`
declares a field with its documentation and bounds, `check_knob` checks a value against
them, `MethodOptions` is the base of the options type a method registers, and
`register_options` / `options_type` map a method's name to that type. The method
registry (`methods.register_method`) fills this map; `MetaClusterConfig` (config.py)
reads it to check a config's `method` and `method_options`, so the config sits below
the methods and imports none of them.

`DEFAULT_METHOD` is the one statement of the default method: the config, the CLI's
help and `metacluster methods` read it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from metacluster.errors import ConfigError
from metacluster.registry import Registry

# The method a config without one runs: it won the ablation in docs/compression.md.
DEFAULT_METHOD = "dkm"
# The method of a report or an artifact written before they named theirs: MetaCluster
# was then the only one. A reader of such a file reports this, never DEFAULT_METHOD.
UNRECORDED_METHOD = "metacluster"

MAX_K = 65536
MAX_EPOCHS = 10_000


def knob(
    default: Any,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[Any, ...] | None = None,
    integer: bool = False,
    optional: bool = False,
) -> Any:
    """A config field with its documentation and bounds (inclusive)."""
    meta = {
        "doc": doc,
        "lo": lo,
        "hi": hi,
        "choices": choices,
        "integer": integer,
        "optional": optional,
    }
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def epochs(default: int, doc: str) -> Any:
    """A knob counting epochs: 0..MAX_EPOCHS (0 skips the stage)."""
    return knob(default, doc, lo=0, hi=MAX_EPOCHS, integer=True)


def rate(default: float, doc: str) -> Any:
    """A learning-rate knob."""
    return knob(default, doc, lo=1e-8, hi=10.0)


def check_knob(name: str, value: Any, meta: Any) -> None:
    """One knob against its declaration; ConfigError naming the knob and its range."""
    if not meta:
        return
    if value is None:
        if meta.get("optional"):
            return
        raise ConfigError(f"{name} must be given")
    choices = meta.get("choices")
    if choices is not None:
        if value not in choices:
            raise ConfigError(
                f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}"
            )
        return
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None and not meta.get("integer"):
        return
    if meta.get("integer"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        what = f"an integer in {lo}..{hi}" if meta.get("integer") else f"a number in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default value (a fresh one for a factory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


# -- the options a method accepts ---------------------------------------------------------
@dataclass(frozen=True)
class MethodOptions:
    """Base of the options a method accepts (a frozen dataclass of JSON values).

    Subclasses declare fields with defaults and check them in `validate`.
    """

    def validate(self) -> None:
        """Raise ConfigError for a bad value."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodOptions:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise ConfigError(f"unknown method option(s) {', '.join(unknown)}; allowed: {allowed}")
        for name, value in data.items():
            want: type = type(known[name].default)
            ok = (
                isinstance(value, bool)
                if want is bool
                else isinstance(value, int | float) and not isinstance(value, bool)
                if want is float
                else isinstance(value, want) and not isinstance(value, bool)
            )
            if not ok:
                raise ConfigError(f"method option {name} must be {want.__name__}, got {value!r}")
        options = cls(**data)
        options.validate()
        return options


@dataclass(frozen=True)
class NoOptions(MethodOptions):
    pass


@dataclass(frozen=True)
class MethodSpec:
    """What the config needs to know of a registered method: its option types.

    `options` checks `method_options`; `groups` are the option groups of the flat config
    (config.py: `MetaLearnerOptions`, `SoftOptions`, `CodebookOptions`) the method reads
    besides the shared `RunConfig`.
    """

    name: str
    options: type[MethodOptions] = NoOptions
    groups: tuple[type, ...] = ()

    def parse(self, data: dict[str, Any]) -> MethodOptions:
        return self.options.from_dict(dict(data))


_SPECS: Registry[MethodSpec] = Registry("compression method", ConfigError)


def register_options(spec: MethodSpec) -> MethodSpec:
    """Record a method's option types (called by `methods.register_method`)."""
    return _SPECS.add(spec.name, spec, same=lambda old, new: old == new)


def options_type(method: object) -> MethodSpec:
    """The option types of a registered method; ConfigError naming those that exist."""
    return _SPECS.get_or_raise(method)


def registered_specs() -> list[MethodSpec]:
    """Every registered method's option types, the default first."""
    return sorted(
        (_SPECS[n] for n in _SPECS), key=lambda s: (s.name not in (DEFAULT_METHOD,), s.name)
    )


# -- JSON Schema of the declarations (OpenAPI documents them) -----------------------------
def _json_type(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _json_type(members[0])
        return {"anyOf": [_json_type(a) for a in members]}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is list or tp is list:
        args = typing.get_args(tp)
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object"}
    return {}


def fields_schema(cls: type) -> dict[str, dict[str, Any]]:
    """JSON Schema properties of a dataclass of knobs: type, default, bounds, choices
    (no tighter than `check_knob`: what the schema allows the config may still refuse,
    what it refuses the config refuses too)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        tp = hints[f.name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        members = list(typing.get_args(tp)) if union else [tp]
        optional = type(None) in members
        kinds = [_json_type(a) for a in members if a is not type(None)]
        for kind in kinds:
            bounded = kind.get("items") if kind.get("type") == "array" else kind
            if bounded is None or bounded.get("type") not in ("integer", "number"):
                continue
            if meta.get("lo") is not None:
                bounded["minimum"] = meta["lo"]
            if meta.get("hi") is not None:
                bounded["maximum"] = meta["hi"]
            if kind.get("type") == "array":
                kind["minItems"], kind["uniqueItems"] = 1, True
        if optional:
            kinds.append({"type": "null"})
        prop: dict[str, Any] = kinds[0] if len(kinds) == 1 else {"anyOf": kinds}
        choices = meta.get("choices")
        if choices is not None and not all(isinstance(c, bool) for c in choices):
            prop["enum"] = list(choices)
        if meta.get("doc"):
            prop["description"] = meta["doc"]
        default = default_of(f)
        if isinstance(default, bool | int | float | str | list) or default is None:
            prop["default"] = default
        out[f.name] = prop
    return out


__all__ = [
    "DEFAULT_METHOD",
    "MAX_EPOCHS",
    "MAX_K",
    "UNRECORDED_METHOD",
    "MethodOptions",
    "MethodSpec",
    "NoOptions",
    "check_knob",
    "default_of",
    "epochs",
    "fields_schema",
    "knob",
    "options_type",
    "rate",
    "register_options",
    "registered_specs",
]
