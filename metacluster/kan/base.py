"""The canonical edge view: one interface every KAN layer family implements.

Compression works on this view only (`EdgeView`), so adding a family means
writing one layer class, never touching the algorithm.

Contract for every `KANLayer` subclass:
- the per-edge coefficient vectors live in ONE parameter, named by
  `coef_name` (default ``"coef"``), whose shape is ``(*edge_dims, L)`` with the
  edge dims in the order (out, in) for dense layers and (out, in, kh, kw) for
  convolutional ones; so ``param.reshape(-1, L)`` is the edge view, row-major
  in that order;
- the layer's forward reads that parameter and nothing else per-edge, so
  ``torch.func.functional_call(model, {name + ".coef": generated})`` runs the
  model with generated (meta-learner / codebook) vectors with full autograd;
- the vector holds EVERY per-edge scalar of the family, folded, because any
  per-edge scalar stored dense caps the compression ratio at about L:1.
  E.g. efficient-kan: ``[spline_weight * spline_scaler (G+k values), base_weight]``
  (L = G+k+1, base weight last); pykan: ``mask * [scale_sp * coef, scale_base]``;
  FastKAN: ``[rbf weights (G), base_linear weight]``; KANConv: spline + base_conv
  weight per (out, in, kh, kw). `Basis.params["base"]` names the base branch
  ("silu", "identity", ...) or is absent when the family has none;
- everything else (grids, LayerNorm, biases, node affines) is "other
  parameters": stored dense by the artifact.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metacluster.kan._common import flat_inputs, linear_over_features


@dataclass(frozen=True)
class Basis:
    """What a coefficient vector means: family, length and basis parameters.

    Two edges may share a codebook only when their `Basis.key()` and their
    group grid fingerprint (see `EdgeView.group_keys`) are equal.
    """

    family: str  # "bspline" | "rbf" | "chebyshev" | "fourier"
    coef_dim: int  # L
    params: dict[str, Any] = field(default_factory=dict)  # JSON-able: grid_size, order, degree, ...

    def key(self) -> str:
        return f"{self.family}:{self.coef_dim}:{json.dumps(self.params, sort_keys=True)}"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "coef_dim": self.coef_dim, "params": dict(self.params)}


@dataclass
class EdgeView:
    """All per-edge coefficient vectors of one layer, with where they sit.

    coefficients: (n_edges, L) float tensor (detached copy-free view).
    index:        (n_edges, 4) long tensor, columns (out, in, kh, kw); kh = kw = 0
                  for dense layers.
    groups:       (n_edges,) long tensor, group id of each edge; edges of one
                  group share an identical grid / basis and may be clustered
                  together. Uniform-grid layers have a single group 0.
    group_keys:   one string per group id: basis key + grid fingerprint; equal
                  keys (also across layers) mean comparable edges.
    """

    layer: str
    basis: Basis
    coefficients: Tensor
    index: Tensor
    groups: Tensor
    group_keys: list[str]

    @property
    def n_edges(self) -> int:
        return int(self.coefficients.shape[0])

    @property
    def coef_dim(self) -> int:
        return int(self.coefficients.shape[1])


def grid_fingerprint(grid: Tensor | None) -> str:
    """Stable short hash of a grid tensor (exact values, fp64)."""
    if grid is None:
        return "-"
    data = grid.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


class KANLayer(nn.Module, ABC):
    """Base class of every KAN layer family (see module docstring for the contract)."""

    family: ClassVar[str]
    coef_name: ClassVar[str] = "coef"

    in_features: int
    out_features: int

    # -- edge view -------------------------------------------------------
    @property
    def coef_param(self) -> nn.Parameter:
        p = getattr(self, self.coef_name)
        assert isinstance(p, nn.Parameter)
        return p

    @property
    def coef_shape(self) -> torch.Size:
        return self.coef_param.shape

    @property
    def n_edges(self) -> int:
        return int(self.coef_param[..., 0].numel())

    @property
    def coef_dim(self) -> int:
        return int(self.coef_param.shape[-1])

    @abstractmethod
    def basis(self) -> Basis:
        """The basis shared by this layer's coefficient vectors."""

    def edge_index(self) -> Tensor:
        """(n_edges, 4) long: (out, in, kh, kw) of each row of the edge view."""
        dims = list(self.coef_shape[:-1])
        grids = torch.meshgrid(*[torch.arange(d) for d in dims], indexing="ij")
        cols = [g.reshape(-1) for g in grids]
        while len(cols) < 4:
            cols.append(torch.zeros_like(cols[0]))
        return torch.stack(cols, dim=1)

    def function_domain(self) -> tuple[float, float]:
        """The input interval `edge_functions` samples (its first input's, where inputs
        have grids of their own)."""
        return (-1.0, 1.0)

    def grid_buffers(self) -> dict[str, tuple[int | None, Tensor]]:
        """Knot buffers by attribute name, each with its knots of extension on either
        side (a B-spline's order; None for a grid without extension, such as RBF
        centres) and the layer's default build of it. The artifact stores these as
        what they derive from (`metacluster.kan.grids`). Default: none."""
        return {}

    def edge_group_tensor(self) -> Tensor | None:
        """What every edge's function shares besides its vector (a grid buffer, Gram's
        beta, a rational's weights); its fingerprint is part of the one group's key.
        Default: nothing."""
        return None

    def edge_groups(self) -> tuple[Tensor, list[str]]:
        """Group id per edge and one key per group. Default: one group, keyed by the
        basis and the fingerprint of `edge_group_tensor()`."""
        key = f"{self.basis().key()}|grid:{grid_fingerprint(self.edge_group_tensor())}"
        return torch.zeros(self.n_edges, dtype=torch.long), [key]

    def edge_view(self, name: str = "") -> EdgeView:
        groups, keys = self.edge_groups()
        return EdgeView(
            layer=name,
            basis=self.basis(),
            coefficients=self.coef_param.detach().reshape(-1, self.coef_dim),
            index=self.edge_index(),
            groups=groups,
            group_keys=keys,
        )

    def set_edge_coefficients(self, coefficients: Tensor) -> None:
        """Write (n_edges, L) vectors back into the coefficient parameter."""
        if tuple(coefficients.shape) != (self.n_edges, self.coef_dim):
            raise ValueError(
                f"expected coefficients of shape {(self.n_edges, self.coef_dim)}, "
                f"got {tuple(coefficients.shape)}"
            )
        with torch.no_grad():
            self.coef_param.copy_(coefficients.reshape(self.coef_shape))

    # -- codebook runtime hooks (metacluster.runtime) ---------------------
    # A layer is `finish(contract(feature_table(x)))`, where contract sums, for each
    # output o, feature row `edge_positions()[e]` times the vector of every edge e of
    # o. The codebook runtime replaces only `contract`; a family that implements
    # these three hooks runs in it.
    def edge_positions(self) -> Tensor:
        """(n_edges,) long: the feature-table column each edge reads (default: its input)."""
        return self.edge_index()[:, 1]

    def feature_table(self, x: Tensor) -> tuple[Tensor, Any]:
        """(R, P, L) features of every (row, position), and what `finish` needs."""
        raise NotImplementedError(f"{type(self).__name__} has no codebook runtime hook")

    def position_features(self, x: Tensor) -> tuple[Tensor, Any]:
        """The feature table position-major, (P, R, L) contiguous: the layout in which
        the codebook runtime projects all rows with one matrix product. Families with
        a direct form override this; the default transposes `feature_table`."""
        table, context = self.feature_table(x)
        return table.transpose(0, 1).contiguous(), context

    def finish(self, y: Tensor, context: Any) -> Tensor:
        """(R, out_features) sums -> the layer's output (bias, norms, output shape)."""
        raise NotImplementedError(f"{type(self).__name__} has no codebook runtime hook")

    def unflatten_coefficients(self, coefficients: Tensor) -> Tensor:
        """(n_edges, L) -> the parameter's shape, for functional_call."""
        return coefficients.reshape(self.coef_shape)

    @abstractmethod
    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """Evaluate each edge's function at `n_points` evenly spaced points of its
        input domain (grid range; [-1, 1] in the transformed input where there is a
        fixed input transform; one period for Fourier). The base branch is included
        where the family folds its weight into the vector (the base weight is
        compressed too, so its error counts). coefficients: (n_edges, L) in edge
        order -> (n_edges, n_points); families whose edges share one grid also take
        any (n, L) vectors (e.g. centroids). Used for the function-space error of
        compression reports."""

    # -- rebuild ---------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able kwargs such that ``type(self)(**config)`` rebuilds the layer
        (shapes and hyperparameters; weights come from the state dict)."""


class FeatureKANLayer(KANLayer):
    """A dense layer that is linear in per-input basis features, plus an optional bias:
    ``y[n, o] = sum_{i, l} features(x)[n, i, l] * coef[o, i, l] + bias[o]``.

    Subclasses set `coef` (O, I, L) and `bias` ((O,) or None) and define `features`.
    """

    coef: Tensor
    bias: Tensor | None

    @abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """(N, I) inputs -> (N, I, L) basis features."""

    def feature_table(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        x2, lead = flat_inputs(x, self.in_features, type(self).__name__)
        return self.features(x2), lead

    def finish(self, y: Tensor, context: tuple[int, ...]) -> Tensor:
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*context, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        feats, lead = self.feature_table(x)
        return self.finish(linear_over_features(feats, self.coef), lead)
