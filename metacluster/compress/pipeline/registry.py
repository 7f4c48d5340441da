"""The method registry: every compression method registers its options and its runner.

In the style of torchao's `quantize_(model, config)`: `compress(model, config, data)`
looks up `config.method`, checks `config.method_options` with the options class the
method registered, and hands the prepared run to the method's runner. The CLI's
`--method` choices, the API's accepted `method` and `plan`'s stage list and byte
estimate all come from here, so adding a method is one decorated function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from metacluster.errors import ConfigError
from metacluster.registry import Registry

if TYPE_CHECKING:
    from metacluster.compress.numeric.codebook import CompressedKAN
    from metacluster.compress.pipeline.context import Context
    from metacluster.compress.pipeline.plan import Check, LayerPlan, StagePlan
    from metacluster.compress.pipeline.report import CompressionReport
    from metacluster.compress.spec.config import MetaClusterConfig


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


Runner = Callable[["Context", Any], tuple["CompressedKAN", "CompressionReport"]]
StagesFn = Callable[["MetaClusterConfig", Any, list[int]], list["StagePlan"]]
PayloadBitsFn = Callable[["LayerPlan", int, "MetaClusterConfig", Any], int]
# The method's preconditions on the layers it will compress (faiss's, say), checked by
# `plan` before anything runs: the dry run and the run apply the same rules.
ChecksFn = Callable[[list["LayerPlan"], "MetaClusterConfig", Any], list["Check"]]


@dataclass(frozen=True)
class Method:
    """A registered compression method."""

    name: str
    summary: str
    run: Runner
    options: type[MethodOptions]
    # The stage visits of one run (with relative weights), for plans and progress bars.
    stages: StagesFn
    # Bits of one compressed layer at codebook size K (the plan's byte estimate).
    payload_bits: PayloadBitsFn
    # Whether `config.k` means anything to this method (a list sweeps it).
    uses_k: bool = True
    checks: ChecksFn | None = None

    def parse_options(self, data: dict[str, Any]) -> Any:
        return self.options.from_dict(dict(data))


_METHODS: Registry[Method] = Registry("compression method", ConfigError)
R = TypeVar("R", bound=Runner)


def register_method(
    name: str,
    *,
    summary: str,
    stages: StagesFn,
    payload_bits: PayloadBitsFn,
    options: type[MethodOptions] = NoOptions,
    uses_k: bool = True,
    checks: ChecksFn | None = None,
) -> Callable[[R], R]:
    """Decorator of a runner `run(ctx, options) -> (CompressedKAN, CompressionReport)`."""

    def deco(run: R) -> R:
        method = Method(name, summary, run, options, stages, payload_bits, uses_k, checks)
        _METHODS.add(name, method, same=lambda old, new: old.run is new.run)
        return run

    return deco


def get_method(name: str) -> Method:
    return _METHODS.get_or_raise(name)


def method_names() -> list[str]:
    """Registered methods, the default (dkm) and MetaCluster first."""
    return sorted(_METHODS, key=lambda n: (n not in ("dkm", "metacluster"), n))


__all__ = [
    "Method",
    "MethodOptions",
    "NoOptions",
    "get_method",
    "method_names",
    "register_method",
]
