"""Benchmark: our BSplineKANLayer against efficient-kan's published KANLinear forward and
flashkan 0.2.0's KANLayer (PyPI; its torch.compile'd truncated-power basis) on CPU.

Run `python benchmarks/kan_layers.py` (writes the `kan_layers` section of RESULTS.md) or
`--quick` for a small smoke run that checks correctness and prints timings only.
`--no-flashkan` leaves flashkan out (its first call compiles C++ for about a minute).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import markdown_table, write_section
from metacluster.kan import BSplineKANLayer


class EfficientKANReference(nn.Module):
    """efficient-kan's KANLinear (Blealtan/efficient-kan, src/efficient_kan/kan.py) forward,
    re-typed here as the baseline: Cox-de Boor `b_splines` on the per-input grid, then
    F.linear(silu(x), base_weight) + F.linear(bases, spline_weight * spline_scaler).
    Initialisation is simplified (random weights; timing does not depend on them)."""

    grid: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        h = (grid_range[1] - grid_range[0]) / grid_size
        grid = torch.arange(-spline_order, grid_size + spline_order + 1) * h + grid_range[0]
        self.register_buffer("grid", grid.expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(
            torch.empty(out_features, in_features, grid_size + spline_order)
        )
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5))
        with torch.no_grad():
            self.spline_weight.uniform_(-0.1, 0.1)

    def b_splines(self, x: Tensor) -> Tensor:
        assert x.dim() == 2 and x.size(1) == self.in_features
        grid = self.grid  # (in, G + 2k + 1)
        x = x.unsqueeze(-1)
        bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
        for k in range(1, self.spline_order + 1):
            bases = (
                (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * bases[:, :, :-1]
            ) + ((grid[:, k + 1 :] - x) / (grid[:, k + 1 :] - grid[:, 1:(-k)]) * bases[:, :, 1:])
        return bases.contiguous()  # (batch, in, G + k)

    @property
    def scaled_spline_weight(self) -> Tensor:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        base_output = F.linear(F.silu(x), self.base_weight)
        spline_output = F.linear(
            self.b_splines(x).view(x.size(0), -1),
            self.scaled_spline_weight.view(self.out_features, -1),
        )
        return base_output + spline_output


def make_pair(
    in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3, seed: int = 0
) -> tuple[BSplineKANLayer, EfficientKANReference]:
    """Our layer and the reference holding the same function (folded coefficients)."""
    torch.manual_seed(seed)
    ref = EfficientKANReference(in_features, out_features, grid_size, spline_order)
    ours = BSplineKANLayer(in_features, out_features, grid_size, spline_order)
    with torch.no_grad():
        ours.grid.copy_(ref.grid)
        ours.coef[..., :-1] = ref.scaled_spline_weight
        ours.coef[..., -1] = ref.base_weight
    return ours, ref


def compare(
    in_features: int,
    out_features: int,
    batch: int,
    grid_size: int = 5,
    spline_order: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Max abs differences of outputs and input gradients (inputs beyond the grid included)."""
    ours, ref = make_pair(in_features, out_features, grid_size, spline_order, seed)
    x = (torch.rand(batch, in_features) * 2.6 - 1.3).requires_grad_(True)
    y_ours, y_ref = ours(x), ref(x)
    (g_ours,) = torch.autograd.grad(y_ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    return {
        "forward": float((y_ours - y_ref).detach().abs().max()),
        "input_grad": float((g_ours - g_ref).abs().max()),
        "scale": float(y_ref.detach().abs().max()),
    }


def flashkan_layer(ours: BSplineKANLayer) -> nn.Module | None:
    """flashkan's KANLayer holding our layer's function (efficient-kan grid), or None
    when flashkan is not installed."""
    try:
        from flashkan import KANLayer
    except ImportError:
        return None
    fk = KANLayer(
        ours.in_features,
        ours.out_features,
        ours.grid_size,
        ours.spline_order,
        grid_range=tuple(ours.grid_range),
    )
    with torch.no_grad():
        fk.spline_weight.copy_(ours.coef[..., :-1])
        fk.base_weight.copy_(ours.coef[..., -1])
    return fk


@dataclass
class Timing:
    ours_ms: float
    ref_ms: float
    flashkan_ms: float = float("nan")

    @property
    def speedup(self) -> float:
        return self.ref_ms / self.ours_ms


def _clock(threads: int) -> Callable[[], float]:
    # One intra-op thread computes on the calling thread, so its CPU time is immune
    # to other processes on a shared machine; with more threads use wall time.
    return time.thread_time if threads == 1 else time.perf_counter


def time_pair(
    ours: Callable[[], object],
    ref: Callable[[], object],
    threads: int,
    repeats: int,
    warmup: int = 2,
    flashkan: Callable[[], object] | None = None,
) -> Timing:
    """Median ms of interleaved runs (ours, ref[, flashkan], ours, ...) after warm-up."""
    clock = _clock(threads)
    fns = [ours, ref] + ([flashkan] if flashkan is not None else [])
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, sink in zip(fns, times, strict=True):
            start = clock()
            fn()
            sink.append((clock() - start) * 1e3)
    medians = [statistics.median(t) for t in times]
    return Timing(*medians)


def _forward(layer: nn.Module, x: Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return layer(x)

    return call


def _forward_backward(layer: nn.Module, x: Tensor) -> Callable[[], object]:
    x = x.detach().requires_grad_(True)

    def call() -> object:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()
        return None

    return call


def run(
    shapes: list[tuple[int, int]],
    batch: int,
    threads: list[int],
    repeats: int,
    with_flashkan: bool = True,
) -> list[list[object]]:
    rows: list[list[object]] = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for in_f, out_f in shapes:
            diffs = compare(in_f, out_f, batch=min(batch, 256))
            ours, ref = make_pair(in_f, out_f)
            fk = flashkan_layer(ours) if with_flashkan else None
            x = torch.rand(batch, in_f) * 2 - 1
            fk_diff = float("nan")
            if fk is not None:
                with torch.no_grad():
                    fk_diff = float((fk(x) - ours(x)).abs().max())

            for mode, make in (("forward", _forward), ("forward+backward", _forward_backward)):
                load = os.getloadavg()[0]
                t = time_pair(
                    make(ours, x),
                    make(ref, x),
                    n_threads,
                    repeats,
                    flashkan=make(fk, x) if fk is not None else None,
                )
                rows.append(
                    [
                        f"{in_f}->{out_f}",
                        n_threads,
                        mode,
                        round(t.ref_ms, 2),
                        round(t.flashkan_ms, 2),
                        round(t.ours_ms, 2),
                        f"{t.speedup:.2f}x",
                        f"{t.flashkan_ms / t.ours_ms:.2f}x",
                        f"{max(diffs['forward'], diffs['input_grad']):.1e}",
                        f"{fk_diff:.1e}",
                        f"{load:.1f}",
                    ]
                )
                print(" | ".join(str(v) for v in rows[-1]), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, no RESULTS.md")
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--no-flashkan", dest="flashkan", action="store_false")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.quick:
        rows = run(
            [(32, 16), (8, 4)], batch=128, threads=threads[:1], repeats=3, with_flashkan=False
        )
    else:
        rows = run([(784, 256), (64, 32)], args.batch, threads, args.repeats, args.flashkan)
    headers = [
        "layer (G=5, k=3)",
        "torch threads",
        "mode",
        "efficient-kan ms",
        "flashkan 0.2.0 ms",
        "ours ms",
        "ours vs efficient-kan",
        "ours vs flashkan",
        "max abs diff (efficient-kan)",
        "max abs diff (flashkan)",
        "load avg",
    ]
    table = markdown_table(headers, rows)
    print(table)
    bad = [r for r in rows if float(str(r[-3])) > 1e-5]
    if bad:
        print(f"outputs differ by more than 1e-5: {bad}", file=sys.stderr)
        return 1
    if not args.quick:
        note = (
            f"\n\nCPU ({os.cpu_count()} cores, shared with other work: `load avg` is the 1-minute "
            f"load when the row started), batch {args.batch}, fp32, median of {args.repeats} "
            "interleaved runs after warm-up. 1 thread is timed in thread CPU time, which other "
            "processes barely disturb; more threads need wall time, which on an oversubscribed "
            "machine mostly measures scheduling (every parallel kernel waits for its slowest "
            "thread), so trust those rows only at low load. forward+backward includes the "
            "input gradient (a hidden layer). "
            "Baseline: efficient-kan's KANLinear forward re-typed in benchmarks/kan_layers.py; "
            "flashkan 0.2.0 (PyPI) KANLayer with its torch.compile'd basis (compiled during "
            "warm-up, not timed), holding the same function (its fp32 truncated-power basis "
            "differs by the `max abs diff (flashkan)` column). Ours: the closed-form basis "
            "in the C kernel of metacluster/kan/native.py (compiled at first use) and "
            "oneDNN products (docs/runtime.md); no torch.compile. "
            f"torch {torch.__version__}."
        )
        write_section("kan_layers", "## KAN layers: B-spline forward/backward\n\n" + table + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
