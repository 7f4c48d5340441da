"""Benchmark: the artifact's index coders, rANS against fixed-width bit packing (the
reference every artifact can fall back to), on skewed and uniform index streams.

Run `python benchmarks/packing.py` (writes the `packing` section of RESULTS.md) or
`--quick` for a small smoke run that checks round trips and prints the table only.
Bytes are exact; times are the median of interleaved repeats in process CPU time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import markdown_table, write_section
from metacluster.compress.numeric.packing import (
    bits_for,
    empirical_entropy_bits,
    pack_indices,
    rans_decode,
    rans_encode,
    unpack_indices,
)


def stream(n: int, k: int, skew: float, seed: int = 0) -> NDArray[np.int64]:
    """n indices in [0, k): Zipf-like with exponent `skew` (0 = uniform)."""
    p = 1.0 / np.arange(1, k + 1) ** skew
    return np.random.default_rng(seed).choice(k, size=n, p=p / p.sum()).astype(np.int64)


def _cpu_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out.append(1000 * (time.process_time() - t0))
    return out


def row(n: int, k: int, skew: float, repeats: int) -> list[object]:
    sym = stream(n, k, skew)
    bits = bits_for(k)
    packed, coded = pack_indices(sym, bits), rans_encode(sym, k)
    if not (
        np.array_equal(unpack_indices(packed, bits, n), sym)
        and np.array_equal(rans_decode(coded, k), sym)
    ):
        raise SystemExit(f"round trip failed at n={n} k={k} skew={skew}")
    times: dict[str, list[float]] = {"pack": [], "unpack": [], "enc": [], "dec": []}
    for _ in range(repeats):  # interleaved, so a busy moment hits both coders alike
        times["pack"] += _cpu_ms(lambda: pack_indices(sym, bits), 1)
        times["unpack"] += _cpu_ms(lambda: unpack_indices(packed, bits, n), 1)
        times["enc"] += _cpu_ms(lambda: rans_encode(sym, k), 1)
        times["dec"] += _cpu_ms(lambda: rans_decode(coded, k), 1)
    med = {name: statistics.median(v) for name, v in times.items()}
    entropy = empirical_entropy_bits(sym, k) / 8
    return [
        f"{n:,}",
        k,
        skew,
        len(packed),
        len(coded),
        round(len(coded) / entropy, 4) if entropy else "-",
        round(med["pack"], 2),
        round(med["unpack"], 2),
        round(med["enc"], 2),
        round(med["dec"], 2),
        round(n / max(med["enc"] + med["dec"], 1e-3) / 1000, 1),
    ]


HEADERS = [
    "indices", "K", "skew", "packed bytes", "rANS bytes", "rANS / entropy",
    "pack ms", "unpack ms", "rANS encode ms", "rANS decode ms", "rANS M indices/s (enc+dec)",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small streams, no RESULTS.md")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    cases = (
        [(10_000, 16, 1.0)]
        if args.quick
        else [(n, k, s) for n in (10_000, 100_000, 1_000_000) for k, s in ((16, 1.0), (256, 0.0))]
    )
    rows = [row(n, k, s, 3 if args.quick else args.repeats) for n, k, s in cases]
    table = markdown_table(HEADERS, rows)
    print(table)
    if not args.quick:
        note = (
            f"\n\nCPU, one process, numpy {np.__version__}, median of {args.repeats} interleaved "
            f"repeats in process CPU time; load average {os.getloadavg()[0]:.1f} at the end. "
            "skew is the Zipf exponent of the index stream (0 = uniform, where rANS can only "
            "tie fixed-width packing; trained codebooks' assignments are skewed). rANS codes "
            "up to 64 interleaved lanes in lock-step numpy steps, so its loop runs n / lanes "
            "times (tests/compress/test_packing.py checks the lanes)."
        )
        write_section("packing", "## Index coding: rANS vs fixed-width packing\n\n" + table + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
