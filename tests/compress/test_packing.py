"""Index coding: fixed-width packing round trips and the rANS coder's size and lanes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from metacluster.compress.numeric.packing import (
    bits_for,
    decode_indices,
    empirical_entropy_bits,
    encode_indices,
    pack_indices,
    quantize_frequencies,
    rans_decode,
    rans_encode,
    unpack_indices,
)
from metacluster.errors import ArtifactError


@pytest.mark.parametrize("k", [2, 3, 4, 5, 16, 17, 32, 255, 256, 1000])
def test_pack_round_trip_and_size(k: int) -> None:
    rng = np.random.default_rng(k)
    idx = rng.integers(0, k, size=1001)
    bits = bits_for(k)
    data = pack_indices(idx, bits)
    assert len(data) == (1001 * bits + 7) // 8
    assert np.array_equal(unpack_indices(data, bits, 1001), idx)


def test_bits_for_is_ceil_log2() -> None:
    assert [bits_for(k) for k in (2, 3, 4, 5, 8, 9, 16, 17, 32)] == [1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_pack_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="indices must lie"):
        pack_indices(np.array([0, 4]), 2)


@pytest.mark.parametrize(
    ("k", "n", "alpha"), [(16, 100_000, 0.5), (4, 20_000, 1.0), (32, 50_000, 0.3)]
)
def test_rans_is_lossless_and_within_3_percent_of_entropy(k: int, n: int, alpha: float) -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(k, alpha))
    sym = rng.choice(k, size=n, p=p)
    data = rans_encode(sym, k)
    assert np.array_equal(rans_decode(data, k), sym)
    entropy_bytes = empirical_entropy_bits(sym, k) / 8
    assert len(data) <= 1.03 * entropy_bytes
    # and clearly below fixed-width packing for a skewed stream
    assert len(data) < len(pack_indices(sym, bits_for(k)))


def test_rans_100k_symbols_code_in_lock_step_lanes() -> None:
    """A long stream is coded by many interleaved lanes, so the Python loop runs
    n / lanes numpy steps, not n (speed itself: benchmarks/packing.py)."""
    rng = np.random.default_rng(2)
    sym = rng.integers(0, 16, size=100_000)
    data = rans_encode(sym, 16)
    lanes = int(np.frombuffer(data, dtype="<u2", count=1)[0])
    assert lanes == 100_000 // 2048
    assert np.array_equal(rans_decode(data, 16), sym)


@pytest.mark.parametrize(
    "sym", [np.array([], dtype=np.int64), np.array([3]), np.zeros(5000, dtype=np.int64)]
)
def test_rans_edge_cases(sym: np.ndarray) -> None:
    data = rans_encode(sym, 4)
    assert np.array_equal(rans_decode(data, 4), sym)


def test_rans_detects_truncation() -> None:
    sym = np.random.default_rng(3).integers(0, 16, size=5000)
    data = rans_encode(sym, 16)
    with pytest.raises(ArtifactError):
        rans_decode(data[: len(data) - 10], 16)


def test_quantized_frequencies_sum_and_keep_rare_symbols() -> None:
    counts = np.array([10**6, 1, 0, 3])
    freq = quantize_frequencies(counts)
    assert freq.sum() == 1 << 14
    assert freq[1] >= 1 and freq[3] >= 1 and freq[2] == 0


def test_encode_auto_picks_smaller() -> None:
    uniform = np.random.default_rng(4).integers(0, 16, size=300)
    kind, data = encode_indices(uniform, 16, "auto")
    assert kind == "packed" and len(data) == 150  # small uniform stream: rANS header loses
    skewed = np.zeros(20_000, dtype=np.int64)
    skewed[::50] = 5
    kind, data = encode_indices(skewed, 16, "auto")
    assert kind == "rans" and len(data) < 10_000 // 4
    assert np.array_equal(decode_indices(data, 16, 20_000, kind), skewed)


def test_packing_benchmark_quick_run_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/packing.py's smoke run checks both coders' round trips and prints its row;
    its rANS bytes are the coder's own (no timing asserted)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "packing.py"
    spec = importlib.util.spec_from_file_location("packing_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 10,000")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    sym = bench.stream(10_000, 16, 1.0)
    assert int(cells[3]) == len(pack_indices(sym, 4)) and int(cells[4]) == len(rans_encode(sym, 16))
