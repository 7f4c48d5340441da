"""The format registry: one handler per checkpoint layout, and detection by keys.

A handler recognises its layout from key names and shapes only, rebuilds a
`KANModel` with the same outputs, counts parameters, and exports back.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint
from metacluster.kan import Affine, KANLayer, KANModel, LayerNorm
from metacluster.registry import Registry

# One layer layout: the key leaves it has, each with its number of dimensions (0: any).
Layout = tuple[tuple[str, int], ...]


class FormatHandler(ABC):
    """One checkpoint layout (docs/formats.md has each library's keys)."""

    name: ClassVar[str]
    # The layer layouts this format reads, for naming the closest one when nothing
    # matches (`detect`); the handler's `matches` is what decides.
    layouts: ClassVar[tuple[Layout, ...]] = ()
    # Last key components of tensors that are fixed structure (knots, masks, index
    # buffers), not learned weights: left out of the parameter count.
    fixed_leaves: ClassVar[frozenset[str]] = frozenset({"grid", "arange"})

    @abstractmethod
    def matches(self, ckpt: Checkpoint) -> bool:
        """True when the checkpoint has this layout's characteristic keys."""

    @abstractmethod
    def load(self, ckpt: Checkpoint) -> KANModel:
        """Rebuild the model; raises FormatError naming what does not fit."""

    def count_params(self, ckpt: Checkpoint, model: KANModel) -> int:
        """Learned scalars as the source library holds them: float tensors of its
        state dict minus the fixed ones (`fixed_leaves`)."""
        return sum(
            int(t.numel())
            for key, t in ckpt.tensors.items()
            if t.is_floating_point() and key.rsplit(".", 1)[-1] not in self.fixed_leaves
        )

    def export(self, model: KANModel, path: Path) -> list[Path]:
        raise FormatError(f"exporting to the {self.name!r} format is not supported")

    def assemble(
        self, keys: KeyTracker, layers: Sequence[nn.Module], family: str, **meta: str
    ) -> KANModel:
        """The model of the loaded `layers`, once every tensor of the checkpoint is
        used and the layer widths chain; `meta` adds to its family and format."""
        keys.check_all_used(self.name)
        check_chain(chain_widths(layers), self.name)
        return KANModel(list(layers), meta={"family": family, "format": self.name, **meta})


HANDLERS: Registry[FormatHandler] = Registry(
    "format", FormatError, lambda names: f"supported: {', '.join(names)}"
)


def register(handler: FormatHandler) -> FormatHandler:
    return HANDLERS.add(handler.name, handler)


def get_handler(name: str) -> FormatHandler:
    return HANDLERS.get_or_raise(name)


def detect(ckpt: Checkpoint) -> FormatHandler:
    """The one handler whose layout matches; ambiguity and no match are errors."""
    found = [h for h in HANDLERS.values() if h.matches(ckpt)]
    # A spec (given or beside the file) says how to read the checkpoint: it wins.
    if ckpt.spec is not None and "spec" in HANDLERS:
        return HANDLERS["spec"]
    if len(found) == 1:
        return found[0]
    if not found:
        sample = ", ".join(list(ckpt.tensors)[:6]) or "no tensors"
        raise FormatError(
            f"{ckpt.path.name} matches no supported KAN layout (keys: {sample}){closest(ckpt)}; "
            f"supported formats: {', '.join(HANDLERS)}; for your own wrapper pass a JSON spec"
        )
    names = ", ".join(h.name for h in found)
    raise FormatError(
        f"{ckpt.path.name} is ambiguous, it matches several formats: {names}; pass format="
    )


# Leaves every torch module has: they alone do not make a checkpoint look like a format.
_GENERIC_LEAVES = frozenset({"weight", "bias"})


def _layout_fit(ckpt: Checkpoint, layout: Layout) -> tuple[float, list[str]]:
    """How much of `layout` the checkpoint has (1 per leaf, 0.5 for a leaf of the wrong
    rank; 0 in all when only generic leaves are there) and what does not match."""
    score, gaps, specific = 0.0, [], False
    for leaf, ndim in layout:
        found = [t for k, t in ckpt.tensors.items() if k == leaf or k.endswith("." + leaf)]
        if not found:
            gaps.append(f"no key ending in {leaf!r}")
            continue
        specific = specific or leaf not in _GENERIC_LEAVES
        if ndim and all(t.dim() != ndim for t in found):
            score += 0.5
            gaps.append(f"{leaf!r} has shape {tuple(found[0].shape)}, expected {ndim} dimensions")
        else:
            score += 1.0
    return (score if specific else 0.0), gaps


def closest(ckpt: Checkpoint) -> str:
    """'; closest known format: NAME (what did not match)', or '' when no format's
    layout shares a key with the checkpoint."""
    best: tuple[float, str, list[str]] | None = None
    for handler in HANDLERS.values():
        for layout in handler.layouts:
            score, gaps = _layout_fit(ckpt, layout)
            if score > 0 and (best is None or score / len(layout) > best[0]):
                best = (score / len(layout), handler.name, gaps)
    if best is None:
        return ""
    detail = "; ".join(best[2]) or "its keys are there, but not on one layer"
    return f"; closest known format: {best[1]} ({detail})"


# -- helpers for handlers --------------------------------------------------------

# Values a module built from a checkpoint's config may hold beyond the tensors the
# checkpoint itself brings (knot grids of a few layers, masks): small next to any
# real model, and far below what a hostile config could ask for.
MAX_EXTRA_ELEMENTS = 1 << 20

M = TypeVar("M", bound=nn.Module)


def build_bounded(
    build: Callable[[], M],
    what: str,
    *,
    expect: Mapping[str, Tensor] | None = None,
    budget: int | None = None,
) -> M:
    """`build()`, once a dry build on the meta device (no memory) showed that it fits,
    in the floating dtype of the `expect`ed tensors.

    A config read from a file (our metadata, a spec, config.json, a pykan YAML) names
    sizes; the tensors in the same file are what is real. The dry build must hold at
    most `budget` values (parameters and buffers; by default the expected tensors' count
    plus MAX_EXTRA_ELEMENTS), and when `expect` is given (the tensors the module will
    load) exactly their names and shapes; otherwise the config is refused with a
    FormatError before anything is allocated.
    """
    if budget is None:
        budget = tensor_elements((expect or {}).values()) + MAX_EXTRA_ELEMENTS
    with torch.device("meta"):
        probe = build()
    elements = sum(int(t.numel()) for t in itertools.chain(probe.parameters(), probe.buffers()))
    if elements > budget:
        raise FormatError(
            f"{what}: its config asks for {elements} values, but the checkpoint holds "
            f"{budget} at most; the config does not fit its tensors"
        )
    if expect is not None:
        want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in expect.items()}
        if want != have:
            missing = sorted(set(want) - set(have))[:3]
            extra = sorted(set(have) - set(want))[:3]
            wrong = [k for k in want if k in have and want[k] != have[k]][:3]
            detail = "; ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"unexpected {extra}" if extra else "",
                    ", ".join(f"{k} is {have[k]}, config says {want[k]}" for k in wrong),
                )
                if part
            )
            raise FormatError(f"{what}: the config does not fit the tensors ({detail})")
    module = build()
    if expect:
        module.to(float_dtype(*expect.values()))
    return module


def tensor_elements(tensors: Iterable[Tensor]) -> int:
    return sum(int(t.numel()) for t in tensors)


class KeyTracker:
    """Marks tensors as used so leftovers (an unknown head, a typo) are reported."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self.used: set[str] = set()

    def get(self, key: str, ndim: int | None = None) -> Tensor:
        value = self.ckpt.tensors.get(key)
        if value is None:
            raise FormatError(f"checkpoint is missing {key!r}")
        if ndim is not None and value.dim() != ndim:
            raise FormatError(f"{key!r} has shape {tuple(value.shape)}, expected {ndim} dimensions")
        self.used.add(key)
        return value

    def numbered(self, prefix: str, leaf: str, ndim: int | None = None) -> list[Tensor]:
        """`{prefix}{leaf}.0.weight`, `.1.weight`, ... while they exist (a ModuleList)."""
        weights: list[Tensor] = []
        while f"{prefix}{leaf}.{len(weights)}.weight" in self.ckpt.tensors:
            weights.append(self.get(f"{prefix}{leaf}.{len(weights)}.weight", ndim))
        return weights

    def optional(self, key: str) -> Tensor | None:
        if key in self.ckpt.tensors:
            self.used.add(key)
            return self.ckpt.tensors[key]
        return None

    def use(self, keys: Iterable[str]) -> None:
        self.used.update(keys)

    def check_all_used(self, fmt: str) -> None:
        left = [k for k in self.ckpt.tensors if k not in self.used]
        if left:
            shown = ", ".join(left[:8]) + (" ..." if len(left) > 8 else "")
            raise FormatError(
                f"{fmt} checkpoint has tensors this importer does not understand ({shown}); "
                "describe the extra modules with a JSON spec"
            )


def layernorm_from(weight: Tensor, bias: Tensor) -> LayerNorm:
    """A LayerNorm holding `weight` and `bias` (checked by the caller: both (n,)), in their dtype."""
    norm = LayerNorm(int(weight.shape[0]))
    norm.to(float_dtype(weight))
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    return norm


def finite_range(value: object, what: str) -> tuple[float, float]:
    """A config's (lo, hi): two finite numbers, lo < hi; FormatError naming `what` if not."""
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(float(v)) for v in value)
        and float(value[0]) < float(value[1])
    ):
        raise FormatError(f"{what} must be two finite numbers lo < hi")
    return float(value[0]), float(value[1])


DEFAULT_INPUT_RANGE = (-20.0, 20.0)


def input_range(opts: Mapping[str, object]) -> tuple[float, float]:
    """Where a rational layer's inputs are taken to lie (its poles are refused there at
    import): the config's `input_range`, else DEFAULT_INPUT_RANGE."""
    return finite_range(opts.get("input_range", DEFAULT_INPUT_RANGE), "config: input_range")


def float_dtype(*tensors: Tensor) -> torch.dtype:
    """The checkpoint's float dtype (fp64 stays fp64; half precision is widened to fp32)."""
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    return torch.float64 if torch.float64 in dtypes else torch.float32


def check_chain(widths: list[tuple[int, int]], fmt: str) -> None:
    for pos in range(1, len(widths)):
        if widths[pos][0] != widths[pos - 1][1]:
            raise FormatError(
                f"{fmt} layers do not chain: layer {pos - 1} gives {widths[pos - 1][1]} outputs "
                f"but layer {pos} takes {widths[pos][0]} inputs"
            )


def chain_widths(layers: Iterable[nn.Module]) -> list[tuple[int, int]]:
    """(in, out) per module; LayerNorm and Affine glue pass their width through."""
    widths: list[tuple[int, int]] = []
    for layer in layers:
        if isinstance(layer, nn.LayerNorm):
            n = int(layer.normalized_shape[0])
            widths.append((n, n))
        elif isinstance(layer, Affine):
            n = int(layer.scale.shape[0])
            widths.append((n, n))
        elif isinstance(layer, KANLayer):
            widths.append((layer.in_features, layer.out_features))
    return widths


def layers_of(model: KANModel, fmt: str, allowed: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """The model's modules, refusing any this format cannot hold."""
    layers = list(model.layers)
    for pos, layer in enumerate(layers):
        if not isinstance(layer, allowed):
            raise IncompatibleError(
                f"layer {pos} ({type(layer).__name__}) cannot be written in the {fmt} format"
            )
    if not layers:
        raise IncompatibleError("the model has no layers to export")
    return layers
