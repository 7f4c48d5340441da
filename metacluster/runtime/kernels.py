"""Gather-and-sum kernels of the codebook runtime, chosen by measurement.

Given the projections `proj` (R, Q, K) of R feature rows on K shared functions at
Q positions, and codes (O, Q) (which function each output takes at each position),
every kernel returns y (R, O) with ``y[r, o] = sum_q proj[r, q, codes[o, q]]``.

- `gather_small`: one `index_select` over the flattened projections, then a sum;
  best for a handful of rows (no transpose, one pass);
- `gather_bags`: `embedding_bag(mode="sum")` over the transposed projections
  (Q*K, R), each output one bag of Q rows: fbgemm's vectorised row sums, best from
  about 8 rows on (docs/format.md, section 7, has the numbers);

The codes are stored narrow (uint8 for K <= 256) and widened to int32 flat indices
per call: the resident weights stay small, the transient index costs O*Q*4 bytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows from which `gather_bags` beats `gather_small` (measured, benchmarks/inference.py).
BAGS_FROM_ROWS = 8


def flat_codes(codes: Tensor, k: int) -> Tensor:
    """(O, Q) narrow codes -> (O * Q,) int32 indices into a flattened (Q, K) table."""
    q = codes.shape[1]
    base = torch.arange(q, dtype=torch.int32, device=codes.device) * k
    return (codes.to(torch.int32) + base).reshape(-1)


def gather_small(proj: Tensor, codes: Tensor) -> Tensor:
    """y (R, O) by one index_select over proj (R, Q, K) flattened per row."""
    r, q, k = proj.shape
    o = codes.shape[0]
    picked = proj.reshape(r, q * k).index_select(1, flat_codes(codes, k))
    return picked.view(r, o, q).sum(-1)


def gather_bags(proj_t: Tensor, codes: Tensor) -> Tensor:
    """y (R, O) by embedding_bag over proj_t (Q, K, R): one bag of Q rows per output."""
    q, k, r = proj_t.shape
    o = codes.shape[0]
    offsets = torch.arange(o, dtype=torch.int32, device=codes.device) * q
    out = F.embedding_bag(flat_codes(codes, k), proj_t.reshape(q * k, r), offsets, mode="sum")
    return out.t()


def project_and_gather(table: Tensor, centroids: Tensor, codes: Tensor) -> Tensor:
    """y (R, O) for features `table` (R, Q, s), `centroids` (K, s) and codes (O, Q):
    each row's features are projected on the K shared functions once, then gathered."""
    rows = table.shape[0]
    if rows == 0:
        return table.new_zeros(0, codes.shape[0])
    if rows < BAGS_FROM_ROWS:
        return gather_small(table @ centroids.t(), codes)
    # (K, s) @ (Q, s, R): the projections come out transposed, as the bags read them.
    proj_t = torch.matmul(centroids, table.permute(1, 2, 0))
    return gather_bags(proj_t, codes)


__all__ = [
    "BAGS_FROM_ROWS",
    "flat_codes",
    "gather_bags",
    "gather_small",
    "project_and_gather",
]
