"""The codebook-domain runtime: run an artifact without rebuilding per-edge vectors.

A compressed layer holds K shared functions (the codebook) and, per edge, which one it
uses. `CodebookLayer` evaluates the layer's basis features once per input (the
family's `feature_table` hook), projects them on the K centroids (n_in x K values per
row), then sums, for every output, the projection its edges select (`kernels`). Every
per-edge scalar is folded into the codebook vectors (docs/format.md, section 3), so
the base branch rides in the same projection; biases, node affines and norms run in
the family's `finish` hook. Resident weights: centroids, one narrow code per edge
and position (uint8 for K <= 256), the layer's other small tensors.

What has no codebook form runs dense: the `int8` / `int4` methods (uniform codes,
one scale per output) and layers the artifact did not compress keep their dense
reconstruction inside the same model (`CodebookKAN.dense_layers` names them).
Inference only: the runtime has no gradients to its codebooks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from metacluster.compress.numeric.codebook import QuantizedCoefficients
from metacluster.errors import ConfigError
from metacluster.kan import native
from metacluster.kan._common import check_features
from metacluster.kan.base import KANLayer
from metacluster.kan.bspline import BSplineKANLayer, _tracing
from metacluster.kan.model import KANModel
from metacluster.runtime.kernels import code_base, flat_codes, gather, project

RUNTIMES = ("dense", "compressed")


def check_runtime(name: str) -> str:
    """`name` when it is a runtime; ConfigError listing the runtimes otherwise."""
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; expected one of: {', '.join(RUNTIMES)}")
    return name


def narrow_codes(codes: Tensor, k: int) -> Tensor:
    """Codes in the smallest integer dtype that holds 0..k-1 (uint8, int16 or int32)."""
    for dtype, limit in ((torch.uint8, 256), (torch.int16, 1 << 15)):
        if k <= limit:
            return codes.to(dtype)
    return codes.to(torch.int32)


def fused_spec(layer: KANLayer, terms: list[tuple[Tensor, int, int, Tensor]]) -> bool:
    """Whether the fused C kernel (`native`) can run this layer: a uniform-grid cubic
    B-spline layer (efficient-kan or pykan layout, SiLU or no base branch) with one
    codebook over whole edge vectors, K <= 256, one position per input."""
    if not isinstance(layer, BSplineKANLayer) or len(terms) != 1:
        return False
    centroids, col0, col1, codes = terms[0]
    k, sub = centroids.shape
    return (
        layer.spline_order == 3
        and layer.use_fast_path
        and layer.base_activation in ("silu", "zero")
        and layer.grid.dtype == torch.float32
        and layer.uniform_params() is not None
        and (col0, col1, sub) == (0, layer.coef_dim, layer.coef_dim)
        and k <= 256
        and tuple(codes.shape) == (layer.out_features, layer.in_features)
        and bool((layer.edge_positions() == layer.edge_index()[:, 1]).all())
    )


class CodebookLayer(nn.Module):
    """One KAN layer in the codebook domain (see the module docstring).

    `terms` are (centroids (K, s), col0, col1, codes (O, P * m)): the columns
    [col0, col1) of every edge vector are m = (col1 - col0) / s sub-vectors, the one
    at position p, chunk j of output o being centroids[codes[o, p * m + j]]. Terms
    add up (residual codebooks, product-quantization parts).

    A layer the fused C kernel can run (`fused_spec`) keeps its codes input-major:
    `codes_0` is then the (O, I) transposed view of an (I, O) uint8 tensor (one copy
    of the codes, read by both kernels), plus the kernel's float32 knot parameters and
    transposed, zero-padded centroids (a few KB); a knot grid whose rows are all equal
    is held as one row expanded. `use_native = False` forces torch.
    """

    codes_0: Tensor
    fused_t0: Tensor
    fused_inv_h: Tensor
    fused_centroids: Tensor

    def __init__(self, layer: KANLayer, terms: list[tuple[Tensor, int, int, Tensor]]) -> None:
        super().__init__()
        self.layer = layer
        self.spans: list[tuple[int, int, int]] = []
        self.positions = int(layer.edge_positions().max()) + 1
        self.fused = fused_spec(layer, terms)
        self.use_native = True
        for j, (centroids, col0, col1, codes) in enumerate(terms):
            k, sub = centroids.shape
            self.register_buffer(f"centroids_{j}", centroids.float().contiguous())
            narrow = narrow_codes(codes, k)
            if self.fused:  # input-major storage, seen as (O, I) by the torch kernels
                narrow = narrow.t().contiguous().t()
            self.register_buffer(f"codes_{j}", narrow)
            chunks = (col1 - col0) // sub
            self.register_buffer(f"base_{j}", code_base(self.positions, chunks, k))
            self.spans.append((col0, col1, chunks))
        if self.fused:
            assert isinstance(layer, BSplineKANLayer)
            uniform = layer.uniform_params()
            assert uniform is not None
            self.register_buffer("fused_t0", uniform[0].float().contiguous())
            self.register_buffer("fused_inv_h", uniform[1].float().contiguous())
            centroids = terms[0][0].float()
            padded = 16 if centroids.shape[0] <= 16 else centroids.shape[0]
            table = centroids.new_zeros(centroids.shape[1], padded)
            table[:, : centroids.shape[0]] = centroids.t()
            self.register_buffer("fused_centroids", table.contiguous())
            grid = layer.grid
            if grid.shape[0] > 1 and bool((grid == grid[:1]).all()):
                # one knot row for every input (efficient-kan's default): held once
                layer.grid = grid[:1].clone().expand_as(grid)
                layer._grid_cache.clear()
        self.in_features = layer.in_features
        self.out_features = layer.out_features

    def terms(self) -> Iterable[tuple[Tensor, int, int, int, Tensor, Tensor]]:
        for j, (col0, col1, chunks) in enumerate(self.spans):
            centroids, codes = getattr(self, f"centroids_{j}"), getattr(self, f"codes_{j}")
            yield centroids, col0, col1, chunks, codes, getattr(self, f"base_{j}")

    def native_forward(self, x: Tensor) -> Tensor | None:
        """The fused C kernel's output, or None where it does not apply (no kernel,
        not a fused layer, not a CPU float32 input, ONNX export)."""
        if not (self.fused and self.use_native) or _tracing():  # ONNX export traces
            return None
        lib = native.kernel()
        if lib is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return None
        if self.fused_centroids.dtype != torch.float32:  # the module was cast
            return None
        check_features(x, self.in_features, type(self.layer).__name__)
        codes_t = self.codes_0.t()
        if not codes_t.is_contiguous():
            return None
        layer = self.layer
        assert isinstance(layer, BSplineKANLayer)
        y = native.bspline_codebook(
            lib,
            x.reshape(-1, self.in_features).contiguous(),
            self.fused_t0,
            self.fused_inv_h,
            layer.n_basis,
            layer.has_base,
            self.fused_centroids,
            codes_t,
        )
        return layer.finish(y, tuple(x.shape[:-1]))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        fast = self.native_forward(x)
        if fast is not None:
            return fast
        feats, context = self.layer.position_features(x)
        y: Tensor | None = None
        for centroids, col0, col1, chunks, codes, base in self.terms():
            table = project(feats[..., col0:col1], centroids.to(feats.dtype), chunks)
            part = gather(table, flat_codes(codes, base, self.positions), self.out_features)
            y = part if y is None else y + part
        assert y is not None  # a CodebookLayer has at least one term
        return self.layer.finish(y, context)

    def extra_repr(self) -> str:
        parts = [f"K={c.shape[0]} cols=[{a},{b}) chunks={m}" for c, a, b, m, _, _ in self.terms()]
        return f"in={self.in_features}, out={self.out_features}, terms=[{'; '.join(parts)}]"


class CodebookKAN(nn.Module):
    """A KANModel's layer stack with its compressed layers in the codebook domain."""

    def __init__(
        self, layers: list[nn.Module], meta: dict[str, Any], dense_layers: list[str]
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.meta = dict(meta)
        self.dense_layers = list(dense_layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    predict = KANModel.predict


def has_hooks(layer: KANLayer) -> bool:
    """Whether the layer's family implements the codebook runtime hooks."""
    kind = type(layer)
    return kind.feature_table is not KANLayer.feature_table and kind.finish is not KANLayer.finish


def resident_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (each storage counted once)."""
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _release_coefficients(layer: KANLayer) -> None:
    """Replace the dense coefficient tensor by a zero-stride placeholder of its shape."""
    shape = layer.coef_shape
    placeholder = torch.zeros((), dtype=layer.coef_param.dtype).expand(shape)
    setattr(layer, layer.coef_name, nn.Parameter(placeholder, requires_grad=False))


def _layer_terms(
    name: str, layer: KANLayer, quant: QuantizedCoefficients
) -> list[tuple[Tensor, int, int, Tensor]]:
    """The layer's codebook terms: codebooks of one column span (and residual depth)
    over its edge groups are merged into one term, their centroids stacked."""
    pieces: dict[tuple[int, int, int, int], list[tuple[Tensor, Tensor, Tensor]]] = defaultdict(list)
    depth: dict[tuple[int, int, int], int] = defaultdict(int)
    for cb in quant.codebooks:
        level_key = (cb.group, cb.col0, cb.col1)
        level = depth[level_key] if cb.residual else 0
        depth[level_key] = level + 1
        m = (cb.col1 - cb.col0) // cb.sub
        for member, rows, idx in quant.groups[cb.group].split(cb.indices.reshape(-1, m)):
            if member == name:
                pieces[(cb.col0, cb.col1, cb.sub, level)].append((cb.centroids, rows, idx))
    outputs = layer.edge_index()[:, 0]
    positions = layer.edge_positions()
    n_pos = int(positions.max()) + 1
    terms = []
    for (col0, col1, sub, _), parts in pieces.items():
        m = (col1 - col0) // sub
        k_total = sum(int(c.shape[0]) for c, _, _ in parts)
        codes = torch.full((layer.out_features, n_pos * m), k_total, dtype=torch.long)
        offset = 0
        for centroids, rows, idx in parts:
            cols = positions[rows][:, None] * m + torch.arange(m)
            codes[outputs[rows][:, None], cols] = idx.long() + offset
            offset += int(centroids.shape[0])
        stacked = torch.cat([c.float() for c, _, _ in parts])
        if bool((codes == k_total).any()):  # positions no edge reads: a zero vector
            stacked = torch.cat([stacked, stacked.new_zeros(1, sub)])
        terms.append((stacked, col0, col1, codes))
    return terms


def codebook_model(model: KANModel, quant: QuantizedCoefficients) -> CodebookKAN:
    """The codebook-domain runtime of `model` (the artifact's rebuilt architecture with
    its other tensors loaded; coefficient tensors are not read) and `quant`."""
    uniform = {uq.layer: uq for uq in quant.uniform}
    swap: dict[str, nn.Module] = {}
    dense: list[str] = []
    top = {f"layers.{i}" for i in range(len(model.layers))}
    decoded: dict[str, Tensor] | None = None
    # gain-shape codes (a gain per edge) have no codebook-domain form yet
    gained = {n for cb in quant.codebooks if cb.gain for n, _ in quant.groups[cb.group].members}
    for name, layer in model.kan_layers():
        if (
            name in uniform
            or name in gained
            or (name in quant.layers and (name not in top or not has_hooks(layer)))
        ):
            # no codebook form (int8/int4, gain-shape), nested, or a family without the
            # runtime hooks: the layer runs dense with its vectors rebuilt
            if decoded is None:
                decoded = quant.layer_coefficients(model)
            layer.set_edge_coefficients(decoded[name].to(layer.coef_param.dtype))
            dense.append(name)
        elif name in uniform or name not in top:
            dense.append(name)
        elif name in quant.layers:
            terms = _layer_terms(name, layer, quant)
            _release_coefficients(layer)
            swap[name] = CodebookLayer(layer, terms)
        else:
            dense.append(name)
    layers = [swap.get(f"layers.{i}", m) for i, m in enumerate(model.layers)]
    runtime = CodebookKAN(layers, model.meta, dense)
    return runtime.eval()


__all__ = [
    "RUNTIMES",
    "CodebookKAN",
    "CodebookLayer",
    "check_runtime",
    "codebook_model",
    "has_hooks",
    "narrow_codes",
    "resident_bytes",
]
