"""Projection and gather-and-sum kernels of the codebook runtime, chosen by measurement.

A term of a layer is K centroids of length s over the feature columns [col0, col1),
cut into m = (col1 - col0) / s chunks, and codes (O, P * m): which centroid output o
takes at position p, chunk j (column p * m + j). With the features position-major
(P, R, L) (R rows: batch, or batch x pixels), one matrix product per chunk projects
every row on every centroid, giving a table of m * K * P rows of R values
(row (j * K + k) * P + p); then ``y[r, o] = sum_q table[flat[o, q], r]``:

- `gather_small`: a 1-D `index_select` of the O * Q entries per row, then a sum;
  best for a few rows of R;
- `gather_bags`: `embedding_bag(mode="sum")`, each output one bag of Q rows: fbgemm's
  vectorised row sums, best from `BAGS_FROM_ROWS` rows on.

Codes stay narrow (uint8 for K <= 256) and become int32 flat indices per call: the
resident weights stay small, the transient index costs O * Q * 4 bytes.
docs/format.md, section 7, has the measurements and the alternatives tried.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows from which `gather_bags` beats `gather_small` (measured, docs/format.md section 7).
BAGS_FROM_ROWS = 8


def code_base(positions: int, chunks: int, k: int, device: torch.device | None = None) -> Tensor:
    """(P * m,) int32: the table row of code 0 at each codes column (p * m + j)."""
    q = torch.arange(positions * chunks, dtype=torch.int32, device=device)
    return (q % chunks) * (k * positions) + q // chunks


def flat_codes(codes: Tensor, base: Tensor, positions: int) -> Tensor:
    """(O, Q) narrow codes -> (O * Q,) int32 rows of the projection table."""
    return (codes.to(torch.int32) * positions + base).reshape(-1)


def project(features: Tensor, centroids: Tensor, chunks: int) -> Tensor:
    """features (P, R, m * s) and centroids (K, s) -> the (m * K * P, R) table.

    One GEMM per chunk, (K, s) @ (s, P * R), reading the features transposed in place.
    """
    positions, rows, width = features.shape
    k, sub = centroids.shape
    flat = features.reshape(positions * rows, width)
    parts = [torch.mm(centroids, flat[:, j * sub : (j + 1) * sub].t()) for j in range(chunks)]
    proj = parts[0] if chunks == 1 else torch.cat(parts)
    return proj.view(chunks * k * positions, rows)


def gather_small(table: Tensor, flat: Tensor, outputs: int) -> Tensor:
    """y (R, O) by a 1-D index_select per row of R (the 2-D row select copies row by
    row, ~20x slower for R = 1) and a sum."""
    if table.shape[1] == 1:
        return table.view(-1).index_select(0, flat).view(1, outputs, -1).sum(2)
    picked = torch.stack([column.index_select(0, flat) for column in table.t().contiguous()])
    return picked.view(table.shape[1], outputs, -1).sum(2)


def gather_bags(table: Tensor, flat: Tensor, outputs: int) -> Tensor:
    """y (R, O) by embedding_bag: one bag of Q table rows per output."""
    per_bag = flat.numel() // outputs
    offsets = torch.arange(outputs, dtype=torch.int32, device=flat.device) * per_bag
    return F.embedding_bag(flat, table, offsets, mode="sum").t()


def gather_graph(table: Tensor, flat: Tensor, outputs: int) -> Tensor:
    """y (R, O) in graph ops only (ONNX Gather + ReduceSum), any R."""
    return table.index_select(0, flat).view(outputs, -1, table.shape[1]).sum(1).t()


def gather(table: Tensor, flat: Tensor, outputs: int) -> Tensor:
    """y (R, O): the kernel measured fastest for this many rows."""
    if torch.onnx.is_in_onnx_export():
        return gather_graph(table, flat, outputs)
    if table.shape[1] == 0:
        return table.new_zeros(0, outputs)
    if table.shape[1] < BAGS_FROM_ROWS:
        return gather_small(table, flat, outputs)
    return gather_bags(table, flat, outputs)


__all__ = [
    "BAGS_FROM_ROWS",
    "code_base",
    "flat_codes",
    "gather",
    "gather_bags",
    "gather_graph",
    "gather_small",
    "project",
]
