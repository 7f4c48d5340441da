"""Codebook groups and quantized coefficients: which edges share a codebook, and how
centroids + indices (or uniform codes) rebuild every layer's coefficient vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from metacluster.compress.spec.options import UNRECORDED_METHOD
from metacluster.errors import ConfigError
from metacluster.kan.base import KANLayer
from metacluster.kan.grids import canonicalize_grids
from metacluster.kan.model import KANModel


@dataclass
class EdgeGroup:
    """Edges that may share one codebook / meta-learner: equal basis and grid.

    members: (layer name, rows of that layer's edge view) in layer order; the
    group's vectors are the concatenation of those rows, in that order.
    """

    key: str
    coef_dim: int
    members: list[tuple[str, Tensor]]

    @property
    def n_edges(self) -> int:
        return sum(int(rows.numel()) for _, rows in self.members)

    @property
    def layers(self) -> list[str]:
        return [name for name, _ in self.members]

    def gather(self, coefs: dict[str, Tensor]) -> Tensor:
        """(n_edges, L) vectors of this group from per-layer (n, L) tensors."""
        return torch.cat([coefs[name][rows] for name, rows in self.members], dim=0)

    def split(self, values: Tensor) -> Iterator[tuple[str, Tensor, Tensor]]:
        """The inverse of `gather`: (layer name, rows, that layer's slice of `values`)
        for every member, `values` having one row (or entry) per edge of the group."""
        offset = 0
        for name, rows in self.members:
            n = int(rows.numel())
            yield name, rows, values[offset : offset + n]
            offset += n


GRID_POLICIES = ("shared", "separate")


def build_groups(
    model: KANModel, layers: list[str], scope: str, grid_policy: str = "shared"
) -> list[EdgeGroup]:
    """Codebook groups of `layers`: per layer or, with scope "global", across layers.

    grid_policy "shared" (the paper's clustering in coefficient space): edges whose
    inputs have different knot grids (pykan after a grid update) still share their
    layer's codebook, each keeping its input's grid; "separate": one group per
    distinct grid.
    """
    if grid_policy not in GRID_POLICIES:
        raise ConfigError(f"grid_policy must be one of {', '.join(GRID_POLICIES)}")
    modules = dict(model.kan_layers())
    groups: dict[str, EdgeGroup] = {}
    for name in layers:
        layer: KANLayer = modules[name]
        if grid_policy == "shared":
            gids = torch.zeros(layer.n_edges, dtype=torch.long)
            keys = [layer.basis().key()]
        else:
            gids, keys = layer.edge_groups()
        for gid, gkey in enumerate(keys):
            rows = torch.nonzero(gids == gid, as_tuple=False).reshape(-1)
            if rows.numel() == 0:
                continue
            key = gkey if scope == "global" else f"{name}|{gkey}"
            if key not in groups:
                groups[key] = EdgeGroup(key, layer.coef_dim, [])
            groups[key].members.append((name, rows))
    return list(groups.values())


@dataclass
class Codebook:
    """K centroids over sub-vectors of the columns [col0, col1) of a group's vectors.

    sub == col1 - col0: vector quantization (MetaCluster, plain K-means, one PQ part);
    sub == 1: scalar weight clustering. indices has n_edges * (col1 - col0) / sub
    entries, edge-major.
    """

    group: int  # position in the list of groups
    centroids: Tensor  # (K, sub)
    indices: Tensor  # (n_sub,) long
    col0: int
    col1: int
    # A second-stage codebook: its vectors add to those of the codebooks before it
    # over the same group and columns (residual vector quantization).
    residual: bool = False
    # A gain codebook (gain-shape VQ, `compress/methods/gainshape.py`): K scalars, one index per
    # edge; its value multiplies the vectors of the codebooks before it over the same
    # group and columns.
    gain: bool = False

    @classmethod
    def from_kmeans(
        cls, group: int, result: Any, width: int, *, residual: bool = False
    ) -> Codebook:
        """The codebook of a `kmeans` result over whole `width`-column vectors (or scalars)."""
        return cls(
            group,
            torch.from_numpy(result.centroids.copy()),
            torch.from_numpy(result.assignment.copy()),
            0,
            width,
            residual=residual,
        )

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def sub(self) -> int:
        return int(self.centroids.shape[1])

    def vectors(self, centroids: Tensor | None = None) -> Tensor:
        """(n_edges, col1 - col0) reconstructed columns (differentiable in centroids)."""
        c = self.centroids if centroids is None else centroids
        if self.gain:  # one scalar per edge, (n_edges, 1)
            return c[self.indices].reshape(-1, 1)
        return c[self.indices].reshape(-1, self.col1 - self.col0)


@dataclass
class UniformQuant:
    """Symmetric uniform quantization of one layer's vectors, one scale per output."""

    layer: str
    bits: int
    scales: Tensor  # (O,) float32, O = number of distinct output indices
    codes: Tensor  # (n_edges, L) long in [-(2^(b-1)-1), 2^(b-1)-1]
    outputs: Tensor  # (n_edges,) long output channel of each edge

    def vectors(self) -> Tensor:
        return self.codes.to(self.scales.dtype) * self.scales[self.outputs][:, None]


def uniform_quant(name: str, layer: KANLayer, w: Tensor, bits: int) -> UniformQuant:
    """Symmetric uniform quantization of a layer's (n_edges, L) vectors, one scale per
    output channel."""
    w = w.float()
    qmax = (1 << (bits - 1)) - 1
    outputs = layer.edge_index()[:, 0]
    n_out = int(outputs.max()) + 1
    absmax = torch.zeros(n_out).scatter_reduce(0, outputs, w.abs().amax(1), reduce="amax")
    scales = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    codes = torch.round(w / scales[outputs][:, None]).clamp(-qmax, qmax).long()
    return UniformQuant(name, bits, scales, codes, outputs)


@dataclass
class QuantizedCoefficients:
    """Everything that replaces the dense coefficient vectors of compressed layers."""

    scope: str
    layers: list[str]
    groups: list[EdgeGroup]
    codebooks: list[Codebook] = field(default_factory=list)
    uniform: list[UniformQuant] = field(default_factory=list)
    method: str = UNRECORDED_METHOD  # set by the method; a v1 artifact named none
    grouping: str = "shared"  # the grid policy the groups were built with

    def layer_coefficients(
        self, model: KANModel, centroids: list[Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Per compressed layer its (n, L) vectors; differentiable in `centroids`."""
        modules = dict(model.kan_layers())
        out: dict[str, Tensor] = {}
        for uq in self.uniform:
            out[uq.layer] = uq.vectors()
        if not self.codebooks:
            return out
        parts: dict[str, list[tuple[Tensor, int, int, Tensor]]] = {}
        for i, cb in enumerate(self.codebooks):
            vecs = cb.vectors(None if centroids is None else centroids[i])
            for name, rows, piece in self.groups[cb.group].split(vecs):
                if cb.residual:  # adds to the previous piece over the same rows and columns
                    prev_rows, c0, c1, prev = parts[name][-1]
                    parts[name][-1] = (prev_rows, c0, c1, prev + piece)
                elif cb.gain:  # scales the previous piece, one gain per edge
                    prev_rows, c0, c1, prev = parts[name][-1]
                    parts[name][-1] = (prev_rows, c0, c1, prev * piece)
                else:
                    parts.setdefault(name, []).append((rows, cb.col0, cb.col1, piece))
        for name, pieces in parts.items():
            layer = modules[name]
            full_rows = pieces[0][0].numel() == layer.n_edges
            if (
                len(pieces) == 1
                and full_rows
                and pieces[0][1] == 0
                and pieces[0][2] == layer.coef_dim
            ):
                out[name] = pieces[0][3]  # the common case: one codebook covers the layer
                continue
            ref = pieces[0][3]
            coef = torch.zeros(layer.n_edges, layer.coef_dim, dtype=ref.dtype, device=ref.device)
            for rows, c0, c1, vals in pieces:
                r = rows.to(ref.device)[:, None]
                c = torch.arange(c0, c1, device=ref.device)[None, :]
                coef = coef.index_put((r.expand(-1, c1 - c0), c.expand(r.shape[0], -1)), vals)
            out[name] = coef
        return out

    def apply(self, model: KANModel) -> None:
        """Write the reconstructed vectors into the model's coefficient parameters."""
        modules = dict(model.kan_layers())
        with torch.no_grad():
            for name, coef in self.layer_coefficients(model).items():
                modules[name].set_edge_coefficients(
                    coef.detach().to(modules[name].coef_param.dtype)
                )


class CompressedKAN(KANModel):
    """A KANModel whose compressed layers hold `quantized` reconstructions.

    It runs like any KANModel (dense coefficients already written in); the
    artifact writer stores `quantized` instead of those dense vectors. Its knot grids
    are made canonical (`metacluster.kan.grids`: within 1e-6 of the originals, and
    exactly what the artifact stores), so this model and the artifact's are one.
    """

    def __init__(
        self, model: KANModel, quantized: QuantizedCoefficients, *, canonical: bool = True
    ) -> None:
        super().__init__(list(model.layers), meta=dict(model.meta))
        self.quantized = quantized
        if canonical:
            canonicalize_grids(self)
        quantized.apply(self)


def coefficient_names(model: KANModel, layers: list[str]) -> dict[str, str]:
    """layer name -> qualified parameter name of its coefficient tensor."""
    modules = dict(model.kan_layers())
    return {
        name: f"{name}.{modules[name].coef_name}" if name else modules[name].coef_name
        for name in layers
    }
