"""Knot grids stored as what they are derived from.

A grid tensor (a KAN layer's ``grid`` buffer: one knot row per input, or one shared
row) is coded row by row:

- ``u`` uniform: t_j = a + (b - a) j / (n - 1), whatever the last bits -> (a, b), its
  first and last knot;
- ``p`` pykan-extended: arbitrary interior knots t_k..t_{n-1-k} (a grid fitted to
  data), the k outer knots on each side continuing with the interior's mean step
  (t_last - t_first) / G, as pykan's ``extend_grid`` makes them -> the G + 1 interior knots;
- ``e`` extended: interior knots, and k evenly spaced outer knots on each side out to
  the first and last knot, as efficient-kan's ``update_grid`` makes them -> the G + 1
  interior knots plus the first and last knot;
- ``r`` raw: every knot.

A row is coded as ``u``, ``p`` or ``e`` only when every knot of the decoded row is
within `rtol` (relative to the row's scale, element by element) of the original. The
decoded grid is the one that counts: the compression engine puts it into the model it
returns (`canonical_grid`), so the returned model and the artifact's are the same.
Every stored number is a knot of the row (never a step computed from knots), so coding
a decoded grid again gives the same numbers: decode(encode(g)) is a fixed point.
A row identical to an earlier one is stored once (``=`` plus the earlier row's index).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from metacluster.errors import ArtifactError

DEFAULT_RTOL = 1e-6

Row = NDArray[np.float64]


def _scale(row: Row) -> float:
    span = float(row.max() - row.min()) if row.size else 0.0
    return max(float(np.abs(row).max()) if row.size else 0.0, span, 1e-30)


def _close(a: Row, b: Row, rtol: float) -> bool:
    return bool(np.all(np.abs(a - b) <= rtol * _scale(b)))


def _between(a: float, b: float, n: int) -> Row:
    """n knots from a to b, evenly spaced, both ends exact."""
    return a + (b - a) * (np.arange(n, dtype=np.float64) / (n - 1))


def _extended(interior: Row, order: int, first: float, last: float) -> Row:
    left = _between(first, float(interior[0]), order + 1)[:-1]
    right = _between(float(interior[-1]), last, order + 1)[1:]
    return np.concatenate([left, interior, right])


def _f32(values: Row) -> Row:
    return values.astype(np.float32).astype(np.float64)


def _code_row(row: Row, order: int | None, rtol: float) -> tuple[str, Row]:
    """(code, stored values) of one knot row; the values as the decoder reads them."""
    n = row.size
    row32 = _f32(row)
    if n >= 2 and _close(_between(row32[0], row32[-1], n), row, rtol):
        return "u", row32[[0, -1]]
    if order is not None and order > 0 and n > 2 * order + 1:
        interior = row32[order : n - order]
        g = interior.size - 1
        step = (interior[-1] - interior[0]) / g
        first, last = interior[0] - order * step, interior[-1] + order * step
        if _close(_extended(interior, order, first, last), row, rtol):
            return "p", interior
        if _close(_extended(interior, order, row32[0], row32[-1]), row, rtol):
            return "e", np.concatenate([interior, row32[[0, -1]]])
    return "r", row32


def _decode_row(code: str, values: Row, n: int, order: int | None) -> Row:
    if code == "u":
        return _between(values[0], values[1], n)
    if code == "r":
        return values
    k = int(order or 0)
    if code == "p":
        step = (values[-1] - values[0]) / (values.size - 1)
        return _extended(values, k, values[0] - k * step, values[-1] + k * step)
    if code == "e":
        return _extended(values[:-2], k, values[-2], values[-1])
    raise ArtifactError(f"unknown grid row code {code!r}")


def _stored_size(code: str, n: int, order: int | None) -> int:
    if code == "u":
        return 2
    if code == "r":
        return n
    interior = n - 2 * int(order or 0)
    return interior + (2 if code == "e" else 0)


def encode_grid(
    grid: Tensor, order: int | None, rtol: float = DEFAULT_RTOL
) -> tuple[list[str], NDArray[np.float32]]:
    """(one code per row, the float32 values of every stored row in order).

    `order`: knots of extension on each side (a B-spline's order), None when the grid
    has none (an RBF's centres).
    """
    rows = grid.detach().to("cpu", torch.float64).reshape(-1, grid.shape[-1]).numpy()
    codes: list[str] = []
    stored: list[Row] = []
    seen: dict[bytes, int] = {}
    for i, row in enumerate(rows):
        key = row.tobytes()
        if key in seen:
            codes.append(f"={seen[key]}")
            continue
        seen[key] = i
        code, values = _code_row(row, order, rtol)
        codes.append(code)
        stored.append(values)
    flat = np.concatenate(stored) if stored else np.zeros(0)
    return codes, flat.astype(np.float32)


def decode_grid(
    codes: list[str], values: NDArray[np.float32], shape: tuple[int, ...], order: int | None
) -> Tensor:
    """Inverse of `encode_grid`: the grid tensor of `shape` (float32)."""
    n = int(shape[-1]) if shape else 1
    rows: list[Row] = []
    data = np.asarray(values, dtype=np.float64)
    pos = 0
    for code in codes:
        if code.startswith("="):
            ref = int(code[1:])
            if not 0 <= ref < len(rows):
                raise ArtifactError("grid row refers to a later row")
            rows.append(rows[ref])
            continue
        size = _stored_size(code, n, order)
        if pos + size > data.size:
            raise ArtifactError("grid values are shorter than their row codes")
        rows.append(_decode_row(code, data[pos : pos + size], n, order))
        pos += size
    if pos != data.size or len(rows) * n != int(np.prod(shape)):
        raise ArtifactError("grid values do not match their shape")
    out = np.stack(rows).reshape(shape) if rows else np.zeros(shape)
    return torch.from_numpy(out.astype(np.float32))


def canonical_grid(grid: Tensor, order: int | None, rtol: float = DEFAULT_RTOL) -> Tensor:
    """The grid as an artifact stores it (within `rtol` of `grid`), in `grid`'s dtype."""
    codes, values = encode_grid(grid, order, rtol)
    out = decode_grid(codes, values, tuple(grid.shape), order)
    return out.to(dtype=grid.dtype, device=grid.device)


def grid_entries(model: torch.nn.Module) -> dict[str, tuple[int | None, Tensor]]:
    """State-dict names of every knot buffer of `model`'s KAN layers, with their order
    and their layer's default build."""
    from metacluster.kan.base import KANLayer

    out: dict[str, tuple[int | None, Tensor]] = {}
    for name, module in model.named_modules():
        if isinstance(module, KANLayer):
            for attr, spec in module.grid_buffers().items():
                out[f"{name}.{attr}" if name else attr] = spec
    return out


@torch.no_grad()
def canonicalize_grids(model: torch.nn.Module, rtol: float = DEFAULT_RTOL) -> None:
    """Replace every knot buffer by the grid an artifact stores for it (in place): the
    layer's default build when every knot is within `rtol` of it (the artifact then
    stores nothing, the config rebuilds it), else `canonical_grid`."""
    state = model.state_dict()
    for name, (order, default) in grid_entries(model).items():
        grid = state[name]
        ref = default.to(torch.float64).reshape(-1, default.shape[-1]).numpy()
        rows = grid.detach().to("cpu", torch.float64).reshape(-1, grid.shape[-1]).numpy()
        if default.shape == grid.shape and all(
            _close(r, d, rtol) for r, d in zip(rows, ref, strict=True)
        ):
            grid.copy_(default.to(grid.dtype))
        else:
            grid.copy_(canonical_grid(grid, order, rtol))


__all__ = [
    "DEFAULT_RTOL",
    "canonical_grid",
    "canonicalize_grids",
    "decode_grid",
    "encode_grid",
    "grid_entries",
]
