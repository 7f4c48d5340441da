"""The family registry: every KAN layer family registers itself with `@register_family`.

A family is a layer class plus what the rest of the library needs to know about it
without special cases: its kind (``dense`` layers map features to features, ``conv``
layers map image channels to channels), whether a fresh model should get a grid over
the data's range, and the layer options training uses unless the user gives them.
`build_kan`, `build_model_for`, `plan` and the service read this table; adding a family
is one decorated class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from torch import nn

from metacluster.errors import ConfigError
from metacluster.kan.model import register_module
from metacluster.registry import Registry

Kind = Literal["dense", "conv"]
KINDS: tuple[Kind, ...] = ("dense", "conv")

L = TypeVar("L", bound=type[nn.Module])


@dataclass(frozen=True)
class Family:
    """One registered KAN layer family."""

    name: str
    layer: type[nn.Module]
    kind: Kind
    # A fresh model's grid spans the training inputs (fixed-interval grids only).
    data_grid: bool = False
    # Layer options `build_model_for` uses unless given (measured defaults).
    train_defaults: Mapping[str, Any] = field(default_factory=dict)


_FAMILIES: Registry[Family] = Registry(
    "KAN family", ConfigError, lambda names: f"expected one of {sorted(names)}"
)


def register_family(
    name: str,
    *,
    kind: Kind,
    data_grid: bool = False,
    train_defaults: Mapping[str, Any] | None = None,
) -> Callable[[L], L]:
    """Class decorator: register a KAN layer family (and its module type, same name)."""
    if kind not in KINDS:
        raise ValueError(f"family kind must be one of {KINDS}, got {kind!r}")

    def deco(cls: L) -> L:
        family = Family(name, cls, kind, data_grid, MappingProxyType(dict(train_defaults or {})))
        _FAMILIES.add(name, family, same=lambda old, new: old.layer is new.layer)
        register_module(name)(cls)
        return cls

    return deco


def get_family(name: str) -> Family:
    return _FAMILIES.get_or_raise(name)


def family_names(kind: Kind | None = None) -> list[str]:
    """Registered family names (of one kind), sorted."""
    return sorted(n for n, f in _FAMILIES.items() if kind is None or f.kind == kind)


def family_of(module: nn.Module) -> Family | None:
    """The registered family of a layer instance (None for glue modules)."""
    name = getattr(module, "module_type", None)
    return _FAMILIES.get(name) if isinstance(name, str) else None


def model_kind(model: nn.Module) -> Kind:
    """``conv`` when any KAN layer of `model` is a conv family, else ``dense``."""
    for module in model.modules():
        family = family_of(module)
        if family is not None and family.kind == "conv":
            return "conv"
    return "dense"


__all__ = [
    "KINDS",
    "Family",
    "Kind",
    "family_names",
    "family_of",
    "get_family",
    "model_kind",
    "register_family",
]
