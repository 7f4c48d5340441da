"""B-spline KAN layers: efficient-kan's KANLinear and pykan's KANLayer on one basis engine.

Uniform grids take a closed-form fast path (the k+1 nonzero cardinal B-spline values of
each input, scattered into its feature row); any other grid uses the Cox-de Boor recursion.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from metacluster.errors import ConfigError, InputError
from metacluster.kan import native
from metacluster.kan._common import (
    ACTIVATION_GRADS,
    activation,
    check_coefficients,
    check_features,
    check_positive,
    check_range,
    linear_over_features,
)
from metacluster.kan.base import Basis, KANLayer, grid_fingerprint
from metacluster.kan.families import register_family

if TYPE_CHECKING:
    from metacluster.kan.conv import KANConv2d

__all__ = [
    "BSplineKANLayer",
    "PyKANLayer",
    "UniformGridCache",
    "bspline_features",
    "cardinal_bspline_values",
    "cox_de_boor_bases",
    "efficient_kan_grid",
    "pykan_grid",
    "uniform_bspline_bases",
    "uniform_grid_params",
]

# A grid row counts as uniform when every knot step equals the mean step to this
# relative tolerance. fp32 grids built by linspace / arange differ from exact
# t0 + j*h by a few ulps (~1e-7 of the step), far below 1e-5, and a step error
# of 1e-5 moves a basis value by about 1e-5 * |dB/dt| <= 1e-5. float64 grids must
# be uniform to fp64 precision: a model cast to fp64 keeps its fp32-rounded knots,
# and those take the exact Cox-de Boor path rather than a 1e-7-accurate shortcut.
UNIFORM_RTOL = {torch.float64: 1e-12}
DEFAULT_UNIFORM_RTOL = 1e-5


def default_knots(
    in_features: int,
    grid_size: int,
    order: int,
    grid_range: tuple[float, float],
    dtype: torch.dtype | None = None,
    *,
    layout: str = "efficient-kan",
) -> Tensor:
    """A library's default knots, (in_features, G + 2k + 1), with its own arithmetic:

    - efficient-kan: ``arange(-k, G+k+1) * h + lo`` in the default float dtype (float32
      unless set), so an imported checkpoint's grid equals a fresh build bit for bit;
    - pykan: ``linspace(lo, hi, G+1)`` extended by `order` steps of h each side, in the
      order pykan's ``extend_grid`` does it, for identical floats.
    """
    lo, hi = grid_range
    if layout == "efficient-kan":
        h = (hi - lo) / grid_size
        row = torch.arange(-order, grid_size + order + 1) * h + lo
        return row.to(dtype or torch.get_default_dtype()).expand(in_features, -1).contiguous()
    grid = torch.linspace(lo, hi, steps=grid_size + 1, dtype=dtype)
    grid = grid[None, :].expand(in_features, -1)
    step = (grid[:, [-1]] - grid[:, [0]]) / (grid.shape[1] - 1)
    for _ in range(order):
        grid = torch.cat([grid[:, [0]] - step, grid], dim=1)
        grid = torch.cat([grid, grid[:, [-1]] + step], dim=1)
    return grid.contiguous()


efficient_kan_grid = functools.partial(default_knots, layout="efficient-kan")
pykan_grid = functools.partial(default_knots, layout="pykan")


def cox_de_boor_bases(x: Tensor, grid: Tensor, order: int) -> Tensor:
    """B-spline bases by the Cox-de Boor recursion on per-input knots.

    x: (N, I); grid: (I, n_knots) nondecreasing -> (N, I, n_knots - order - 1).
    Half-open support, so inputs outside [grid[:, 0], grid[:, -1]) give zero
    (as efficient-kan). Zero-length knot spans (repeated knots) contribute zero
    instead of efficient-kan's NaN (pykan's nan_to_num, without hiding NaN inputs).
    """
    grid = grid.to(x.dtype)
    xs = x.unsqueeze(-1)
    bases = ((xs >= grid[:, :-1]) & (xs < grid[:, 1:])).to(x.dtype)
    for d in range(1, order + 1):
        left_den = grid[:, d:-1] - grid[:, : -(d + 1)]
        right_den = grid[:, d + 1 :] - grid[:, 1:-d]
        left_den = torch.where(left_den == 0, torch.ones_like(left_den), left_den)
        right_den = torch.where(right_den == 0, torch.ones_like(right_den), right_den)
        bases = (xs - grid[:, : -(d + 1)]) / left_den * bases[..., :-1] + (
            grid[:, d + 1 :] - xs
        ) / right_den * bases[..., 1:]
    return bases


def cardinal_bspline_values(t: Tensor, order: int) -> Tensor:
    """Values of the order+1 uniform B-splines that are nonzero on one unit cell.

    t: local coordinate in [0, 1) -> (..., order + 1); column r belongs to the basis
    whose support starts order - r cells left of the current cell. Columns sum to 1.
    """
    if order == 3:
        # Explicit cubic pieces: fewer kernels than the recursion on the hot path.
        t2 = t * t
        t3 = t2 * t
        s = 1.0 - t
        return torch.stack(
            [
                s * s * s / 6.0,
                (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
                (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
                t3 / 6.0,
            ],
            dim=-1,
        )
    vals = torch.ones_like(t).unsqueeze(-1)
    tt = t.unsqueeze(-1)
    zero = torch.zeros_like(tt)
    for d in range(1, order + 1):
        r = torch.arange(d + 1, dtype=t.dtype, device=t.device)
        left = torch.cat([zero, vals], dim=-1)  # left[r] = previous value r - 1
        right = torch.cat([vals, zero], dim=-1)  # right[r] = previous value r
        vals = ((tt + d - r) * left + (r + 1 - tt) * right) / d
    return vals


def cardinal_bspline_derivatives(t: Tensor, order: int) -> Tensor:
    """d/dt of `cardinal_bspline_values(t, order)`: (..., order + 1).

    Uniform knots: B'_{c,k} = B_{c,k-1} - B_{c+1,k-1} (unit spacing).
    """
    if order == 0:
        return torch.zeros(*t.shape, 1, dtype=t.dtype, device=t.device)
    if order == 3:
        t2 = t * t
        s = 1.0 - t
        return torch.stack(
            [-0.5 * s * s, 1.5 * t2 - 2.0 * t, -1.5 * t2 + t + 0.5, 0.5 * t2], dim=-1
        )
    prev = cardinal_bspline_values(t, order - 1)
    zero = torch.zeros_like(prev[..., :1])
    return torch.cat([zero, prev], dim=-1) - torch.cat([prev, zero], dim=-1)


@functools.lru_cache(maxsize=64)
def _window_tables(
    n_basis: int, order: int, base: str, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Lookup tables (slots, width) per cell slot: slot 0 = left of the knots,
    slot c + 1 = knot interval c, last slot = right of the knots.

    index: feature column of each of the k+1 window values; where that basis does
    not exist it points at the base column (base="junk": overwritten afterwards) or
    is clamped into range (its value is zeroed by `valid`). base="fused" appends the
    base column itself as one more window entry. valid: 1/0 whether a value exists.
    Tables are tiny; `index_select` on them is far cheaper than computing and
    masking (N, I, k+1) int64 indices.
    """
    n_cells = n_basis + order
    cells = torch.arange(-1, n_cells + 1).unsqueeze(-1)
    index = cells - order + torch.arange(order + 1)
    valid = (index >= 0) & (index < n_basis) & (cells >= 0) & (cells < n_cells)
    if base == "junk":
        index = torch.where(valid, index, torch.full_like(index, n_basis))
    else:
        index = index.clamp(0, n_basis - 1)
    if base == "fused":
        index = torch.cat([index, torch.full_like(index[:, :1], n_basis)], dim=1)
        valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
    return index.to(device), valid.to(device=device, dtype=dtype)


def _locate(x: Tensor, t0: Tensor, inv_h: Tensor, n_cells: int) -> tuple[Tensor, Tensor]:
    """Cell slot of each input (see `_window_tables`) and its local coordinate in [0, 1).

    Inputs left of the knots land in [-1, 0) and right of them at n_cells (NaN too),
    i.e. in the outside slots, with finite local coordinates.
    """
    u = (x - t0.to(x.dtype)) * inv_h.to(x.dtype)
    u = torch.nan_to_num(u, nan=float(n_cells)).clamp_(-1.0, float(n_cells))
    cell = torch.floor(u)
    t = u - cell
    return cell.long().add_(1), t


def _lookup(table: Tensor, cell: Tensor) -> Tensor:
    """table[cell] for a (slots, k+1) table: (*cell.shape, k+1), contiguous."""
    out = table.new_empty((*cell.shape, table.shape[1]))
    # out= into a fresh contiguous tensor: the allocating int64 variant of
    # index_select takes a ~5x slower path for narrow rows (torch 2.x, CPU).
    torch.index_select(table, 0, cell.reshape(-1), out=out.view(-1, table.shape[1]))
    return out


def _interleave(planes: Tensor) -> Tensor:
    """(k+1, N, I) planes -> (N, I, k+1) contiguous."""
    return planes.movedim(0, -1).contiguous()


def _window_rows(t: Tensor, order: int, derivative: bool = False, extra: int = 0) -> Tensor:
    """(k+1 + extra, *t.shape): cardinal B-spline values (or d/dt) as contiguous rows,
    followed by `extra` uninitialised rows for the caller to fill.

    Row-major output lets every cubic piece be written in place by one kernel, with
    no stacking pass.
    """
    if order != 3:
        fn = cardinal_bspline_derivatives if derivative else cardinal_bspline_values
        rows = fn(t, order).movedim(-1, 0)
        return torch.cat([rows, rows.new_empty((extra, *t.shape))]) if extra else rows.contiguous()
    out = t.new_empty((4 + extra, *t.shape))
    s = 1.0 - t
    t2 = t * t
    if derivative:  # [-s^2/2, 3t^2/2 - 2t, -3t^2/2 + t + 1/2, t^2/2]; rows sum to 0
        torch.mul(s * s, -0.5, out=out[0])
        torch.mul(t2, 0.5, out=out[3])
        torch.add(t2.mul_(1.5), t, alpha=-2.0, out=out[1])
        torch.add(out[0], out[1], out=out[2])
        out[2].add_(out[3]).neg_()
        return out
    # [s^3/6, t^3/2 - t^2 + 2/3, 1 - (the others), t^3/6]; rows sum to 1
    t3 = t2 * t
    torch.mul(s * s, s, out=out[0]).mul_(1.0 / 6.0)
    torch.mul(t3, 1.0 / 6.0, out=out[3])
    torch.add(t3.mul_(0.5), t2, alpha=-1.0, out=out[1]).add_(2.0 / 3.0)
    torch.add(out[0], out[1], out=out[2])
    out[2].add_(out[3]).neg_().add_(1.0)
    return out


class _UniformBSplineFeatures(torch.autograd.Function):
    """(N, I) inputs -> (N, I, L) dense features: scattered cardinal B-spline values
    and, with a base branch, act(x) in the last column. The backward gathers only the
    k+1 (+1) nonzero columns instead of replaying the Cox-de Boor recursion.

    Memory traffic decides the speed: polynomials are evaluated on contiguous
    (k+1, N, I) planes, then interleaved once so that a single scatter / gather
    touches each (N, I, L) row once; the base column rides in the same pass.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        t0: Tensor,
        inv_h: Tensor,
        order: int,
        n_basis: int,
        base: str | None,
    ) -> Tensor:
        cell, t = _locate(x, t0, inv_h, n_basis + order)
        out = x.new_zeros(*x.shape, n_basis + (base is not None))
        if base is not None and not ctx.needs_input_grad[0]:
            # Inference: one input's window columns are distinct except the missing
            # bases of end cells, sent to the base column and overwritten after, so a
            # plain scatter_ is exact and needs no validity mask.
            index_table, _ = _window_tables(n_basis, order, "junk", x.device, x.dtype)
            out.scatter_(-1, _lookup(index_table, cell), _interleave(_window_rows(t, order)))
            out[..., -1] = activation(base)(x)
            return out
        mode = "none" if base is None else "fused"
        index_table, valid_table = _window_tables(n_basis, order, mode, x.device, x.dtype)
        planes = _window_rows(t, order, extra=int(base is not None))  # (k+1 [+1], N, I)
        if base is not None:  # the base column rides along as one more window entry
            planes[-1] = activation(base)(x)
        index = _lookup(index_table, cell)  # (N, I, k+1 [+1])
        valid = _lookup(valid_table, cell)
        # Missing bases of the end cells are clamped onto real columns with value 0.
        out.scatter_add_(-1, index, _interleave(planes).mul_(valid))
        if ctx.needs_input_grad[0]:
            # d/dx = d/dt / h, folded into the saved derivative values.
            dplanes = _window_rows(t, order, derivative=True, extra=int(base is not None))
            dplanes[: order + 1].mul_(inv_h.to(x.dtype))
            if base is not None:
                dplanes[-1] = ACTIVATION_GRADS[base](x)
            ctx.save_for_backward(index, _interleave(dplanes).mul_(valid))
        return out

    @staticmethod
    @once_differentiable  # the saved derivative values are constants: no double backward
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_x = None
        if ctx.needs_input_grad[0]:
            index, dvals = ctx.saved_tensors
            grad_x = grad.gather(-1, index).mul_(dvals).sum(-1)
        return grad_x, None, None, None, None, None


def uniform_bspline_bases(
    x: Tensor,
    t0: Tensor,
    inv_h: Tensor,
    order: int,
    n_basis: int,
    base: str | None = None,
) -> Tensor:
    """Closed-form B-spline bases on per-input uniform knots t0 + j / inv_h.

    x: (N, I); t0, inv_h: (I,) -> (N, I, n_basis), or (N, I, n_basis + 1) with the
    activation named `base` applied to x in the last column. Equals
    `cox_de_boor_bases` on the same knots without its O(k * n_knots) work, and has
    a sparse custom backward (first order).
    """
    if base is not None and base not in ACTIVATION_GRADS:
        raise ConfigError(
            f"unknown activation {base!r}; expected one of {sorted(ACTIVATION_GRADS)}"
        )
    out: Tensor = _UniformBSplineFeatures.apply(  # type: ignore[no-untyped-call]
        x, t0, inv_h, order, n_basis, base
    )
    return out


class _NativeBSplineFeatures(torch.autograd.Function):
    """`uniform_bspline_bases` (cubic, SiLU or no base branch, fp32, CPU) by the C
    kernels of `metacluster.kan.native`: the dense feature rows written in one
    pass, and a backward that recomputes the window derivatives from x (nothing but
    the inputs is saved)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, t0: Tensor, inv_h: Tensor, n_basis: int, silu: bool, lib: Any
    ) -> Tensor:
        ctx.save_for_backward(x, t0, inv_h)
        ctx.meta = (n_basis, silu, lib)
        return native.bspline_features(lib, x, t0, inv_h, n_basis, silu)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_x = None
        if ctx.needs_input_grad[0]:
            x, t0, inv_h = ctx.saved_tensors
            n_basis, silu, lib = ctx.meta
            grad_x = native.bspline_features_grad(
                lib, x, t0, inv_h, n_basis, silu, grad.contiguous()
            )
        return grad_x, None, None, None, None, None


def _native_kernel(x: Tensor, order: int, base: str | None) -> Any:
    """The C kernel library when it can compute these features, else None."""
    if order != 3 or base not in (None, "silu") or x.dtype != torch.float32:
        return None
    if x.device.type != "cpu" or x.dim() != 2 or _tracing():
        return None
    return native.kernel()


def _tracing() -> bool:
    """Whether torch.jit (the ONNX exporter) is tracing: it needs plain torch ops."""
    return bool(torch.jit.is_tracing())  # type: ignore[attr-defined,no-untyped-call]


@functools.lru_cache(maxsize=1)
def onednn_linear() -> Any:
    """torch's oneDNN matmul (`torch.ops.mkldnn._linear_pointwise`, x @ w.T) when this
    build has it and it computes a small product right, else None.

    At one thread on the project's CPU (AMD EPYC, torch 2.13) it runs the dense
    layer's three products 10-20% faster than `torch.mm` (MKL); it is a private op,
    so anything unexpected sends the layer back to `F.linear`.
    """
    try:
        if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
            return None
        op = torch.ops.mkldnn._linear_pointwise
        a = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)
        w = torch.linspace(0.5, -0.7, 20).reshape(5, 4)
        if not torch.allclose(op(a, w.t().contiguous().t(), None, "none", [], ""), a @ w.t()):
            return None
    except (AttributeError, RuntimeError, TypeError):
        return None
    return op


class _OneDNNLinear(torch.autograd.Function):
    """feats (N, K) @ weight (O, K).T and its two gradients by `onednn_linear`."""

    @staticmethod
    def forward(ctx: Any, feats: Tensor, weight: Tensor, op: Any) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(feats, weight)
        ctx.op = op
        out: Tensor = op(feats, weight, None, "none", [], "")
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        feats, weight = ctx.saved_tensors
        grad_feats = grad_weight = None
        if torch.is_grad_enabled():  # create_graph: differentiable torch products
            if ctx.needs_input_grad[0]:
                grad_feats = grad @ weight
            if ctx.needs_input_grad[1]:
                grad_weight = grad.t() @ feats
            return grad_feats, grad_weight, None
        grad = grad.contiguous()
        if ctx.needs_input_grad[0]:
            grad_feats = ctx.op(grad, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_weight = ctx.op(grad.t().contiguous(), feats.t(), None, "none", [], "")
        return grad_feats, grad_weight, None


def features_linear(feats: Tensor, coef: Tensor, use_onednn: bool = True) -> Tensor:
    """y[n, o] = sum_{i,l} feats[n, i, l] * coef[o, i, l]: `linear_over_features`, or
    for non-empty contiguous fp32 CPU operands the oneDNN products (`onednn_linear`)."""
    # never probe oneDNN while tracing (ONNX export): the probe's ops would join the graph
    op = onednn_linear() if use_onednn and not _tracing() else None
    usable = (
        op is not None
        and feats.dtype == coef.dtype == torch.float32
        and feats.device.type == "cpu"
        and feats.shape[0] > 0
        and feats.is_contiguous()
        and coef.is_contiguous()
    )
    if not usable:
        return linear_over_features(feats, coef)
    n, i, length = feats.shape
    out: Tensor = _OneDNNLinear.apply(  # type: ignore[no-untyped-call]
        feats.reshape(n, i * length), coef.reshape(coef.shape[0], i * length), op
    )
    return out


def uniform_grid_params(grid: Tensor) -> tuple[Tensor, Tensor] | None:
    """(t0, 1/h) per row (float64) when every grid row is uniform, else None."""
    if grid.dim() != 2 or grid.shape[1] < 2:
        return None
    g = grid.detach().to(torch.float64)
    h = (g[:, -1] - g[:, 0]) / (g.shape[1] - 1)
    if not bool(torch.all(h > 0)) or not bool(torch.isfinite(g).all()):
        return None
    steps = g[:, 1:] - g[:, :-1]
    rtol = UNIFORM_RTOL.get(grid.dtype, DEFAULT_UNIFORM_RTOL)
    if bool(((steps - h[:, None]).abs() > rtol * h[:, None]).any()):
        return None
    return g[:, 0].clone(), 1.0 / h


def _grid_key(grid: Tensor) -> tuple[Any, ...] | None:
    """Identity + version of the grid tensor, or None where it cannot be tracked."""
    try:
        return (grid.data_ptr(), grid._version, grid.dtype, grid.device, tuple(grid.shape))
    except RuntimeError:  # inference tensors / functorch wrappers carry no version
        return None


class UniformGridCache:
    """Remembers whether a knot tensor is uniform, keyed by its storage and version.

    In-place writes (load_state_dict, set_grid) bump the version and .to() makes a
    new tensor, so a stale answer is never returned; owners also clear() it on load.
    The cached tensor is kept referenced so that its storage address cannot be
    reused by a different grid while the key is held.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._ref: Tensor | None = None
        self._params: tuple[Tensor, Tensor] | None = None

    def clear(self) -> None:
        self._key = self._ref = self._params = None

    def get(self, grid: Tensor) -> tuple[Tensor, Tensor] | None:
        """(t0, 1/h) per row when every row of `grid` (rows, n_knots) is uniform."""
        key = _grid_key(grid)
        if key is not None and key == self._key:
            return self._params
        params = uniform_grid_params(grid)
        self._key, self._ref, self._params = key, grid, params
        return params


def bspline_features(
    x: Tensor,
    grid: Tensor,
    order: int,
    base: str | None,
    uniform: tuple[Tensor, Tensor] | None,
    *,
    position_major: bool = False,
    use_native: bool = True,
) -> Tensor:
    """(N, I) -> (N, I, L): B-spline bases on `grid` (I, n_knots), then the activation
    named `base` applied to x when given; (I, N, L) with `position_major`.

    `uniform` = (t0, 1/h) selects the closed-form path; None the Cox-de Boor one.
    Cubic fp32 CPU features with a SiLU (or no) base take the C kernels of
    `metacluster.kan.native` when they build (`use_native=False`: never). On
    uniform knots, position-major runs the closed form on the transposed inputs (I, N)
    with the per-input knot parameters as columns: no (N, I, L) tensor is transposed.
    """
    n_basis = grid.shape[-1] - order - 1
    if uniform is not None and not position_major and use_native:
        lib = _native_kernel(x, order, base)
        if lib is not None:
            t0, inv_h = (p.to(torch.float32).contiguous() for p in uniform)
            out: Tensor = _NativeBSplineFeatures.apply(  # type: ignore[no-untyped-call]
                x.contiguous(), t0, inv_h, n_basis, base is not None, lib
            )
            return out
    if uniform is not None:
        t0, inv_h = uniform
        if position_major:
            x, t0, inv_h = x.t().contiguous(), t0[:, None], inv_h[:, None]
        return uniform_bspline_bases(x, t0, inv_h, order, n_basis, base)
    bases = cox_de_boor_bases(x, grid, order)
    if base is not None:
        bases = torch.cat([bases, activation(base)(x).unsqueeze(-1)], dim=-1)
    return bases.transpose(0, 1).contiguous() if position_major else bases


def bspline_basis(layer: BSplineKANLayer | KANConv2d) -> Basis:
    """The basis descriptor shared by dense and convolutional B-spline layers."""
    params: dict[str, Any] = {
        "grid_size": layer.grid_size,
        "order": layer.spline_order,
        "grid_range": list(layer.grid_range),
        "n_spline": layer.n_basis,
    }
    if layer.has_base:
        params["base"] = layer.base_activation
    return Basis("bspline", layer.coef_dim, params)


@register_family("bspline", kind="dense", data_grid=True)
class BSplineKANLayer(KANLayer):
    """efficient-kan KANLinear with the per-edge base weight folded into `coef`.

    y_o = sum_i coef[o, i, -1] * act(x_i) + sum_c coef[o, i, c] * B_c(x_i), with
    B-splines of order k on a per-input knot buffer `grid` (I, G + 2k + 1).
    coef: (O, I, G + k + 1), or (O, I, G + k) when base_activation == "zero".
    Set `use_fast_path = False` to force the Cox-de Boor path, `use_native = False`
    to keep the closed form in torch ops (no C kernel) and the product in `F.linear`
    (no oneDNN).
    """

    family = "bspline"
    grid: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] | list[float] = (-1.0, 1.0),
        base_activation: str = "silu",
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.grid_size = check_positive("grid_size", grid_size)
        self.spline_order = check_positive("spline_order", spline_order, minimum=0)
        self.grid_range = check_range("grid_range", grid_range)
        self.base_activation = base_activation
        activation(base_activation)  # validates the name
        self.has_base = base_activation != "zero"
        self.n_basis = self.grid_size + self.spline_order
        self.use_fast_path = True
        self.use_native = True
        self.register_buffer("grid", self._default_grid())
        width = self.n_basis + (1 if self.has_base else 0)
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, width))
        self._grid_cache = UniformGridCache()
        self.reset_parameters()

    def _default_grid(self) -> Tensor:
        return efficient_kan_grid(
            self.in_features, self.grid_size, self.spline_order, self.grid_range
        )

    def reset_parameters(self, scale_noise: float = 0.1) -> None:
        """Base weights kaiming-uniform (as nn.Linear), spline coefficients small noise."""
        bound = scale_noise / math.sqrt(self.in_features)
        with torch.no_grad():
            self.coef[..., : self.n_basis].uniform_(-bound, bound)
            if self.has_base:
                nn.init.kaiming_uniform_(self.coef[..., -1], a=math.sqrt(5))

    # -- grid ------------------------------------------------------------
    def set_grid(self, grid: Tensor) -> None:
        """Replace the knots (I, G + 2k + 1), e.g. after a pykan grid update."""
        expected = (self.in_features, self.n_basis + self.spline_order + 1)
        if tuple(grid.shape) != expected:
            raise ConfigError(f"grid must have shape {expected}, got {tuple(grid.shape)}")
        if not bool(torch.all(grid[:, 1:] >= grid[:, :-1])):
            raise ConfigError("grid rows must be nondecreasing")
        with torch.no_grad():
            self.grid.copy_(grid)
        self._grid_cache.clear()

    def uniform_params(self) -> tuple[Tensor, Tensor] | None:
        """(t0, 1/h) when all knot rows are uniform (cached per grid version), else None."""
        return self._grid_cache.get(self.grid)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._grid_cache.clear()  # the grid may have changed

    # -- forward ---------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """(N, I) -> (N, I, L): spline bases then the base activation (when present)."""
        uniform = self.uniform_params() if self.use_fast_path else None
        base = self.base_activation if self.has_base else None
        return bspline_features(
            x, self.grid, self.spline_order, base, uniform, use_native=self.use_native
        )

    def feature_table(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        check_features(x, self.in_features, type(self).__name__)
        return self.features(x.reshape(-1, self.in_features)), tuple(x.shape[:-1])

    def position_features(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        check_features(x, self.in_features, type(self).__name__)
        uniform = self.uniform_params() if self.use_fast_path else None
        base = self.base_activation if self.has_base else None
        x2 = x.reshape(-1, self.in_features)
        feats = bspline_features(
            x2, self.grid, self.spline_order, base, uniform, position_major=True
        )
        return feats, tuple(x.shape[:-1])

    def finish(self, y: Tensor, context: tuple[int, ...]) -> Tensor:
        return y.reshape(*context, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        feats, lead = self.feature_table(x)
        # (N, I, L) x (O, I, L)
        return self.finish(features_linear(feats, self.coef, self.use_native), lead)

    # -- edge view -------------------------------------------------------
    def basis(self) -> Basis:
        return bspline_basis(self)

    def function_domain(self) -> tuple[float, float]:
        k = self.spline_order
        return (float(self.grid[0, k]), float(self.grid[0, -k - 1]))

    def grid_buffers(self) -> dict[str, tuple[int | None, Tensor]]:
        return {"grid": (self.spline_order, self._default_grid())}

    def edge_groups(self) -> tuple[Tensor, list[str]]:
        """Edges grouped by identical knot rows of their input (one group if uniform)."""
        rows, inverse = torch.unique(self.grid.detach().cpu(), dim=0, return_inverse=True)
        key = self.basis().key()
        keys = [f"{key}|grid:{grid_fingerprint(row)}" for row in rows]
        return inverse.repeat(self.out_features), keys

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """Each edge's function (spline plus base branch) on its input's grid range.

        coefficients: (n_edges, L), rows in edge order, or (n, L) arbitrary vectors
        (e.g. centroids) when all inputs share one grid -> (n, n_points).
        """
        check_coefficients(coefficients, self.coef_dim)
        k = self.spline_order
        grid = self.grid.detach().to(coefficients.dtype)
        steps = torch.linspace(0.0, 1.0, n_points, dtype=coefficients.dtype, device=grid.device)
        lo, hi = grid[:, k], grid[:, -k - 1]
        xs = lo + steps[:, None] * (hi - lo)  # (P, I)
        feats = self.features(xs)  # (P, I, L)
        if coefficients.shape[0] == self.n_edges:
            coef = coefficients.reshape(self.out_features, self.in_features, self.coef_dim)
            out = torch.einsum("oil,pil->oip", coef, feats)
            return out.reshape(self.n_edges, n_points)
        if not bool((grid == grid[:1]).all()):
            raise InputError(
                "edge_functions of arbitrary vectors needs one shared grid; this layer has "
                "per-input grids, pass one vector per edge"
            )
        return coefficients @ feats[:, 0, :].T

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "grid_size": self.grid_size,
            "spline_order": self.spline_order,
            "grid_range": list(self.grid_range),
            "base_activation": self.base_activation,
        }

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, G={self.grid_size}, "
            f"k={self.spline_order}, base={self.base_activation}"
        )


@register_family("pykan_bspline", kind="dense", data_grid=True)
class PyKANLayer(BSplineKANLayer):
    """pykan 0.2.x KANLayer (numeric branch) plus MultKAN's subnode and node affines.

    Per edge mask * (scale_base * base(x) + scale_sp * spline(x)) is folded into
    coef = mask * [scale_sp * coef, scale_base]; after the sum over inputs,
    y = node_scale * (subnode_scale * y + subnode_bias) + node_bias, as
    MultKAN.forward does for a layer without multiplication nodes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 3,
        spline_order: int = 3,
        grid_range: tuple[float, float] | list[float] = (-1.0, 1.0),
        base_activation: str = "silu",
    ) -> None:
        super().__init__(
            in_features, out_features, grid_size, spline_order, grid_range, base_activation
        )
        self.subnode_scale = nn.Parameter(torch.ones(self.out_features))
        self.subnode_bias = nn.Parameter(torch.zeros(self.out_features))
        self.node_scale = nn.Parameter(torch.ones(self.out_features))
        self.node_bias = nn.Parameter(torch.zeros(self.out_features))

    def _default_grid(self) -> Tensor:
        return pykan_grid(self.in_features, self.grid_size, self.spline_order, self.grid_range)

    def reset_parameters(self, scale_noise: float = 0.5) -> None:
        """pykan's scales: spline noise / G times scale_sp = 1/sqrt(I); scale_base U(+-1/sqrt(I))."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.coef[..., : self.n_basis].uniform_(-0.5, 0.5).mul_(
                scale_noise / self.grid_size * bound
            )
            if self.has_base:
                self.coef[..., -1].uniform_(-bound, bound)

    def finish(self, y: Tensor, context: tuple[int, ...]) -> Tensor:
        y = self.subnode_scale * super().finish(y, context) + self.subnode_bias
        return self.node_scale * y + self.node_bias
