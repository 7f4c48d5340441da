"""docs/format.md is enough to read an artifact: a reader written from the spec alone
(struct, json, zlib, hashlib, numpy; none of metacluster's decoders) gets the same
coefficient vectors as `load_artifact`, for bit-packed and rANS indices and fp16
centroids."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from metacluster.artifact import load_artifact, write_artifact
from metacluster.compress import MetaClusterConfig, compress
from metacluster.data import load_dataset
from metacluster.kan import build_kan


# -- the reader, from docs/format.md ---------------------------------------------------------
def read_blob(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    tag = header["__metadata__"]["mcz"]
    assert tag.startswith("2:")
    start, end = header["p"]["data_offsets"]
    blob = raw[8 + header_len + start : 8 + header_len + end]
    m = int(tag[2:])
    manifest = json.loads(zlib.decompress(blob[:m]))
    payload = blob[m:]
    assert hashlib.sha256(payload).hexdigest() == manifest["sha256"]
    return manifest, payload


def unpack(data: bytes, k: int, n: int) -> list[int]:
    bits = max(1, math.ceil(math.log2(k)))
    stream = int.from_bytes(data, "little")
    return [(stream >> (i * bits)) & ((1 << bits) - 1) for i in range(n)]


def rans(data: bytes, k: int) -> list[int]:
    lanes, n = struct.unpack_from("<HI", data, 0)
    freq = list(struct.unpack_from(f"<{k}H", data, 6))
    state = list(struct.unpack_from(f"<{lanes}I", data, 6 + 2 * k))
    words_at = 6 + 2 * k + 4 * lanes
    words = list(struct.unpack_from(f"<{(len(data) - words_at) // 2}H", data, words_at))
    cum = [0]
    for f in freq:
        cum.append(cum[-1] + f)
    out = [0] * n
    pos = 0
    for t in range(-(-n // lanes)):
        for j in range(min(lanes, n - t * lanes)):
            x = state[j]
            slot = x & (2**14 - 1)
            s = next(i for i in range(k) if cum[i] <= slot < cum[i + 1])
            out[t * lanes + j] = s
            x = freq[s] * (x >> 14) + slot - cum[s]
            if x < 2**16:
                x = (x << 16) | words[pos]
                pos += 1
            state[j] = x
    assert pos == len(words) and all(x == 2**16 for x in state)
    return out


def layer_vectors(path: Path, edges: dict[str, int]) -> dict[str, np.ndarray]:
    """(n_edges, L) vectors of each compressed layer (scope per_layer, grouping shared)."""
    manifest, payload = read_blob(path)
    assert manifest["v"] == 2 and manifest["scope"] == "per_layer"
    out: dict[str, np.ndarray] = {}
    # Pieces lie back to back in manifest order: codebooks, uniform layers, others.
    sizes = [n for e in manifest["cb"] + manifest["uq"] for n in e["o"]]
    sizes += [e[2] for e in manifest["other"]]
    assert sum(sizes) == len(payload)
    pos = 0
    for cb in manifest["cb"]:
        name = manifest["layers"][cb["g"]]
        c_len, i_len = cb["o"]
        c_off, i_off = pos, pos + c_len
        pos += c_len + i_len
        dtype = {"f4": "<f4", "f2": "<f2"}[cb["dt"]]
        cent = np.frombuffer(payload[c_off : c_off + c_len], dtype=dtype).reshape(cb["k"], cb["s"])
        data = payload[i_off : i_off + i_len]
        idx = unpack(data, cb["k"], cb["n"]) if cb["x"] == "packed" else rans(data, cb["k"])
        c0, c1 = cb["c"]
        cols = cent[idx].astype(np.float64).reshape(edges[name], c1 - c0)
        full = out.setdefault(name, np.zeros((edges[name], c1), dtype=np.float64))
        if full.shape[1] < c1:
            full = np.pad(full, ((0, 0), (0, c1 - full.shape[1])))
        full[:, c0:c1] = full[:, c0:c1] + cols if cb.get("r") else cols
        out[name] = full
    return out


# -- the check ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [{"entropy": "none"}, {"entropy": "rans"}, {"codebook_dtype": "float16"}],
    ids=["packed", "rans", "fp16"],
)
def test_a_reader_written_from_the_spec_gets_the_same_vectors(
    options: dict[str, Any], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_kan("bspline", [64, 12, 10]).eval()
    config = MetaClusterConfig(
        k=8,
        regress_steps=20,
        meta_epochs=1,
        soft_epochs=1,
        soft_min_steps=0,
        finetune_epochs=1,
        kmeans_iters=5,
        kmeans_restarts=1,
        baselines=False,
        device="cpu",
        **options,
    )
    compressed, report = compress(model, config, load_dataset("digits"))
    path = tmp_path / "m.mcz"
    write_artifact(compressed, path, report)
    manifest, _ = read_blob(path)
    assert {cb["x"] for cb in manifest["cb"]} == (
        {"rans"} if options.get("entropy") == "rans" else {"packed"}
    )
    loaded = load_artifact(path)
    layers = dict(loaded.kan_layers())
    edges = {name: layers[name].n_edges for name in manifest["layers"]}
    mine = layer_vectors(path, edges)
    assert set(mine) == set(manifest["layers"])
    for name, vectors in mine.items():
        theirs = layers[name].edge_view(name).coefficients.double().numpy()
        np.testing.assert_allclose(vectors, theirs, rtol=0, atol=1e-6)
