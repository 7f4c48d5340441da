"""The method registry: every compression method registers its options and its runner.

In the style of torchao's `quantize_(model, config)`: `compress(model, config, data)`
looks up `config.method` and hands the prepared run, with the options the config
parsed by the options class the method registered (`config.options`), to the method's
runner. Registering a method also records its option types in options.py, where the
config (which sits below the methods) reads them. The CLI's
`--method` choices, the API's accepted `method` and `plan`'s stage list and byte
estimate all come from here, so adding a method is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from metacluster.compress.spec.options import (
    DEFAULT_METHOD,
    UNRECORDED_METHOD,
    MethodOptions,
    MethodSpec,
    NoOptions,
    register_options,
)
from metacluster.errors import ConfigError
from metacluster.registry import Registry

if TYPE_CHECKING:
    from metacluster.compress.numeric.codebook import CompressedKAN
    from metacluster.compress.pipeline.context import Context
    from metacluster.compress.pipeline.plan import Check, LayerPlan, StagePlan
    from metacluster.compress.pipeline.report import CompressionReport
    from metacluster.compress.spec.config import MetaClusterConfig


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
    # The option groups of the flat config this method reads (config.py).
    groups: tuple[type, ...] = ()

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
    groups: tuple[type, ...] = (),
) -> Callable[[R], R]:
    """Decorator of a runner `run(ctx, options) -> (CompressedKAN, CompressionReport)`.

    `options` checks the config's `method_options`; `groups` are the option groups of the
    flat config the method reads (config.py), documented per method by the API."""

    def deco(run: R) -> R:
        method = Method(name, summary, run, options, stages, payload_bits, uses_k, checks, groups)
        _METHODS.add(name, method, same=lambda old, new: old.run is new.run)
        register_options(MethodSpec(name, options, groups))
        return run

    return deco


def get_method(name: str) -> Method:
    return _METHODS.get_or_raise(name)


def method_names() -> list[str]:
    """Registered methods, the default (`DEFAULT_METHOD`) first, then the paper's."""
    return sorted(_METHODS, key=lambda n: (n != DEFAULT_METHOD, n != UNRECORDED_METHOD, n))


__all__ = [
    "Method",
    "MethodOptions",
    "NoOptions",
    "get_method",
    "method_names",
    "register_method",
]
