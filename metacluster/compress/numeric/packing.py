"""Index streams to bytes: fixed-width bit packing and a static interleaved rANS coder.

Both are pure numpy and vectorised; rANS runs many interleaved lanes in lock-step
so ~100k symbols code in a few milliseconds of numpy calls instead of a Python loop.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from metacluster.errors import ArtifactError

# rANS parameters: 32-bit states in [2^16, 2^32), 16-bit words, frequencies sum to 2^14.
PROB_BITS = 14
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 16
_WORD = 16
_MAX_LANES = 64
# Each lane costs 4 bytes of final state; aim for >= this many symbols per lane
# so the state overhead stays well under 1% of the stream.
_SYMBOLS_PER_LANE = 2048


def bits_for(k: int) -> int:
    """ceil(log2 k) bits per index (at least 1)."""
    if k < 1:
        raise ValueError(f"codebook size must be >= 1, got {k}")
    return max(1, math.ceil(math.log2(k)))


# -- fixed-width bit packing -------------------------------------------------
def pack_indices(indices: NDArray[np.integer], bits: int) -> bytes:
    """Pack non-negative integers < 2^bits into a little-endian bit stream."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    if idx.size and (idx.min() < 0 or idx.max() >= (1 << bits)):
        raise ValueError(f"indices must lie in [0, {1 << bits}) for {bits}-bit packing")
    # (n, bits) matrix of bits, least significant first, then one packbits call.
    shifts = np.arange(bits, dtype=np.int64)
    bit_matrix = ((idx[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    return bytes(np.packbits(bit_matrix.ravel(), bitorder="little").tobytes())


def unpack_indices(data: bytes, bits: int, count: int) -> NDArray[np.int64]:
    """Inverse of `pack_indices`."""
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise ArtifactError(f"packed index stream too short: {len(data)} < {need} bytes")
    raw = np.frombuffer(data, dtype=np.uint8, count=need)
    bit_arr = np.unpackbits(raw, bitorder="little")[: count * bits].astype(np.int64)
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    return np.asarray(bit_arr.reshape(count, bits) @ weights, dtype=np.int64)


# -- static rANS ----------------------------------------------------------------
def quantize_frequencies(counts: NDArray[np.integer]) -> NDArray[np.int64]:
    """Scale symbol counts to integers summing to PROB_SCALE, every used symbol >= 1."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("cannot build frequencies of an empty stream")
    used = counts > 0
    if int(used.sum()) > PROB_SCALE:
        raise ValueError(f"at most {PROB_SCALE} distinct symbols can be entropy-coded")
    freq = np.where(used, np.maximum(1, np.floor(counts * PROB_SCALE / total)), 0).astype(np.int64)
    # Hand out (or take back) the rounding remainder where it hurts least:
    # largest counts first, never dropping a used symbol below 1.
    diff = PROB_SCALE - int(freq.sum())
    order = np.argsort(-counts, kind="stable")
    i = 0
    while diff != 0:
        s = order[i % len(order)]
        if counts[s] > 0:
            if diff > 0:
                step = diff if i < len(order) else 1
                freq[s] += step
                diff -= step
            elif freq[s] > 1:
                step = min(-diff, int(freq[s]) - 1)
                freq[s] -= step
                diff += step
        i += 1
    return freq


def _lanes_for(n: int) -> int:
    return int(max(1, min(_MAX_LANES, n // _SYMBOLS_PER_LANE)))


def rans_encode(symbols: NDArray[np.integer], k: int) -> bytes:
    """Encode symbols in [0, k) with a static rANS coder.

    Layout (little-endian): u8 lanes-1... see `rans_decode`: header
    [u16 lanes][u32 n][k x u16 freq] then lanes x u32 final states, then 16-bit words.
    """
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    n = int(sym.size)
    if n and (sym.min() < 0 or sym.max() >= k):
        raise ValueError(f"symbols must lie in [0, {k})")
    if k > PROB_SCALE:
        raise ValueError(f"rANS supports at most {PROB_SCALE} symbols, got k={k}")
    counts = np.bincount(sym, minlength=k) if n else np.ones(k, dtype=np.int64)
    freq = quantize_frequencies(counts)
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.uint64)
    freq_u = freq.astype(np.uint64)

    lanes = _lanes_for(n)
    steps = -(-n // lanes) if n else 0
    state = np.full(lanes, RANS_L, dtype=np.uint64)
    # x_max(s) = ((L >> PROB_BITS) << WORD) * freq(s): states at or above it renormalise.
    x_max_all = ((RANS_L >> PROB_BITS) << _WORD) * freq_u
    words: list[NDArray[np.uint64]] = []
    mask16 = np.uint64(0xFFFF)
    for t in range(steps - 1, -1, -1):
        lo = t * lanes
        hi = min(lo + lanes, n)
        s = sym[lo:hi]
        x = state[: hi - lo]
        f = freq_u[s]
        emit = x >= x_max_all[s]
        if emit.any():
            # The decoder reads lanes in ascending order, the stream backwards:
            # push this step's words in descending lane order.
            words.append((x[emit] & mask16)[::-1])
            x = np.where(emit, x >> np.uint64(_WORD), x)
        x = ((x // f) << np.uint64(PROB_BITS)) + (x % f) + cum[s]
        state[: hi - lo] = x
    stream = np.concatenate(words)[::-1].astype("<u2") if words else np.zeros(0, dtype="<u2")
    header = np.array([lanes], dtype="<u2").tobytes() + np.array([n], dtype="<u4").tobytes()
    return header + freq.astype("<u2").tobytes() + state.astype("<u4").tobytes() + stream.tobytes()


def rans_decode(data: bytes, k: int) -> NDArray[np.int64]:
    """Inverse of `rans_encode`."""
    try:
        lanes = int(np.frombuffer(data, dtype="<u2", count=1, offset=0)[0])
        n = int(np.frombuffer(data, dtype="<u4", count=1, offset=2)[0])
        freq = np.frombuffer(data, dtype="<u2", count=k, offset=6).astype(np.int64)
        state = np.frombuffer(data, dtype="<u4", count=lanes, offset=6 + 2 * k).astype(np.uint64)
        words = np.frombuffer(data, dtype="<u2", offset=6 + 2 * k + 4 * lanes).astype(np.uint64)
    except (ValueError, IndexError) as exc:
        raise ArtifactError(f"corrupt rANS index stream: {exc}") from exc
    if lanes < 1 or int(freq.sum()) != PROB_SCALE:
        raise ArtifactError("corrupt rANS index stream: bad header")
    cum = np.concatenate([[0], np.cumsum(freq)]).astype(np.int64)
    # slot -> symbol lookup table over the PROB_SCALE cumulative range
    slot_to_sym = np.repeat(np.arange(k, dtype=np.int64), freq)
    freq_u = freq.astype(np.uint64)
    cum_u = cum.astype(np.uint64)
    out = np.empty(n, dtype=np.int64)
    steps = -(-n // lanes) if n else 0
    pos = 0
    mask = np.uint64(PROB_SCALE - 1)
    for t in range(steps):
        lo = t * lanes
        hi = min(lo + lanes, n)
        x = state[: hi - lo]
        slot = x & mask
        s = slot_to_sym[slot.astype(np.int64)]
        out[lo:hi] = s
        x = freq_u[s] * (x >> np.uint64(PROB_BITS)) + slot - cum_u[s]
        need = x < RANS_L
        m = int(need.sum())
        if m:
            if pos + m > words.size:
                raise ArtifactError("corrupt rANS index stream: truncated")
            x[need] = (x[need] << np.uint64(_WORD)) | words[pos : pos + m]
            pos += m
        state[: hi - lo] = x
    if pos != words.size or not np.all(state == RANS_L):
        raise ArtifactError("corrupt rANS index stream: did not end in the initial state")
    return out


def empirical_entropy_bits(symbols: NDArray[np.integer], k: int) -> float:
    """Total Shannon information (bits) of the stream under its own histogram."""
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    if sym.size == 0:
        return 0.0
    counts = np.bincount(sym, minlength=k).astype(np.float64)
    p = counts[counts > 0] / sym.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def encode_indices(indices: NDArray[np.integer], k: int, coding: str) -> tuple[str, bytes]:
    """("packed" | "rans", bytes); coding "auto" keeps the smaller of the two."""
    bits = bits_for(k)
    if coding == "none":
        return "packed", pack_indices(indices, bits)
    if coding == "rans":
        return "rans", rans_encode(indices, k)
    packed = pack_indices(indices, bits)
    if k > PROB_SCALE:
        return "packed", packed
    coded = rans_encode(indices, k)
    return ("rans", coded) if len(coded) < len(packed) else ("packed", packed)


def decode_indices(data: bytes, k: int, count: int, coding: str) -> NDArray[np.int64]:
    if coding == "packed":
        out = unpack_indices(data, bits_for(k), count)
    elif coding == "rans":
        out = rans_decode(data, k)
    else:
        raise ArtifactError(f"unknown index coding {coding!r}")
    if out.size != count or (count and (out.min() < 0 or out.max() >= k)):
        raise ArtifactError("index stream does not match its codebook")
    return out
