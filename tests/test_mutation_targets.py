"""Tests written to kill surviving mutants of the mutation run (docs/reliability.md).

Each pins a behaviour of `kan/bspline.py`, `compress/numeric/kmeans.py`, `compress/numeric/packing.py`
or `artifact.py` that the rest of the suite only exercised loosely: boundaries of the
index packer and the rANS coder, its corrupt-stream errors, knots exactly on an input
and repeated knots in the Cox-de Boor recursion, the cardinal B-spline tables on
batched inputs, the basis descriptor, and what the artifact's manifest records.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from metacluster.compress.numeric.packing import (
    PROB_SCALE,
    pack_indices,
    quantize_frequencies,
    rans_decode,
    rans_encode,
    unpack_indices,
)
from metacluster.errors import ArtifactError, ConfigError
from metacluster.kan import BSplineKANLayer
from metacluster.kan.bspline import (
    bspline_basis,
    cardinal_bspline_derivatives,
    cardinal_bspline_values,
    cox_de_boor_bases,
    uniform_bspline_bases,
    uniform_grid_params,
)

F64 = torch.float64


# -- packing -------------------------------------------------------------------------
def test_32_bit_indices_pack_and_33_or_0_bits_are_refused() -> None:
    idx = np.array([0, 1, (1 << 32) - 1, 123456789], dtype=np.int64)
    data = pack_indices(idx, 32)
    assert len(data) == 16 and np.array_equal(unpack_indices(data, 32, 4), idx)
    for bits in (0, 33):
        with pytest.raises(ValueError):
            pack_indices(np.array([0]), bits)


def test_unpack_reads_only_what_it_needs() -> None:
    idx = np.array([3, 1, 2, 0, 3], dtype=np.int64)
    data = pack_indices(idx, 2) + b"\xff\xff"  # trailing bytes of the next segment
    assert np.array_equal(unpack_indices(data, 2, 5), idx)
    assert unpack_indices(data, 2, 5).dtype == np.int64


def test_rans_refuses_symbols_at_or_above_k_and_too_many_symbols() -> None:
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 4\)"):
        rans_encode(np.array([0, 1, 4]), 4)  # == k, no negative around
    with pytest.raises(ValueError, match="symbols must lie"):
        rans_encode(np.array([5, 6]), 4)
    with pytest.raises(ValueError, match="symbols must lie"):
        rans_encode(np.array([-1, 0]), 4)
    with pytest.raises(ValueError, match="at most"):
        rans_encode(np.array([0]), PROB_SCALE + 1)


def test_rans_with_exactly_prob_scale_symbols_round_trips() -> None:
    sym = np.random.default_rng(0).permutation(PROB_SCALE)
    out = rans_decode(rans_encode(sym, PROB_SCALE), PROB_SCALE)
    assert np.array_equal(out, sym) and out.dtype == np.int64


@pytest.mark.parametrize("n", [0, 1, 7, 2048 * 3 + 5])
def test_rans_round_trips_skewed_streams_of_any_length(n: int) -> None:
    rng = np.random.default_rng(n)
    k = 37
    p = np.r_[0.9, np.full(k - 1, 0.1 / (k - 1))]
    sym = rng.choice(k, size=n, p=p)
    data = rans_encode(sym, k)
    assert np.array_equal(rans_decode(data, k), sym)
    if n > 1000:  # skewed: well under the 6 bits of plain packing
        assert len(data) < n * 6 / 8


def _header(data: bytes, k: int) -> tuple[int, int]:
    return int(np.frombuffer(data, "<u2", 1, 0)[0]), 6 + 2 * k


def test_rans_decode_refuses_a_bad_header_truncation_and_leftovers() -> None:
    k = 5
    sym = np.random.default_rng(1).integers(0, k, 500)
    data = bytearray(rans_encode(sym, k))
    bad_freq = bytearray(data)
    bad_freq[6:8] = (int.from_bytes(data[6:8], "little") + 1).to_bytes(2, "little")
    with pytest.raises(ArtifactError, match="bad header"):
        rans_decode(bytes(bad_freq), k)
    no_lanes = bytearray(data)
    no_lanes[0:2] = b"\0\0"
    with pytest.raises(ArtifactError, match="bad header"):
        rans_decode(bytes(no_lanes), k)
    with pytest.raises(ArtifactError, match="truncated"):
        rans_decode(bytes(data[:-4]), k)
    with pytest.raises(ArtifactError, match="did not end in the initial state"):
        rans_decode(bytes(data) + b"\0\0", k)
    with pytest.raises(ArtifactError, match="corrupt rANS index stream"):
        rans_decode(bytes(data[:3]), k)


def test_quantized_frequencies_keep_order_sum_and_every_used_symbol() -> None:
    counts = np.array([1000, 1, 0, 50, 3, 0, 7])
    freq = quantize_frequencies(counts)
    assert int(freq.sum()) == PROB_SCALE and freq.dtype == np.int64
    assert np.all(freq[counts > 0] >= 1) and np.all(freq[counts == 0] == 0)
    used = np.flatnonzero(counts)
    order = used[np.argsort(counts[used])]
    assert np.all(np.diff(freq[order]) >= 0)  # more frequent never gets less
    # proportional up to the rounding handed to the largest count
    assert abs(int(freq[0]) - 1000 * PROB_SCALE / 1061) < 8
    with pytest.raises(ValueError, match="empty"):
        quantize_frequencies(np.zeros(3, np.int64))


def test_quantized_frequencies_take_back_an_overshoot() -> None:
    # many rare symbols each rounded up to 1 overshoot PROB_SCALE: the big ones pay
    counts = np.r_[np.full(PROB_SCALE - 10, 1), [10**6, 10**6]]
    freq = quantize_frequencies(counts)
    assert int(freq.sum()) == PROB_SCALE and int(freq.min()) == 1


# -- B-splines ---------------------------------------------------------------------------
def test_cox_de_boor_on_knots_is_half_open_and_sums_to_one() -> None:
    grid = (torch.arange(-3, 9, dtype=F64) * 0.25 - 1.0).reshape(1, -1)  # 12 knots
    order = 3
    inside = grid[0, order : grid.shape[1] - order]  # every knot of the un-extended range
    x = inside[:-1].reshape(-1, 1)  # the last one is the half-open end
    bases = cox_de_boor_bases(x, grid, order)
    torch.testing.assert_close(bases.sum(-1), torch.ones_like(bases.sum(-1)), atol=1e-12, rtol=0)
    params = uniform_grid_params(grid)
    assert params is not None
    fast = uniform_bspline_bases(x, params[0], params[1], order, grid.shape[1] - order - 1)
    torch.testing.assert_close(bases, fast, atol=1e-12, rtol=0)
    # at a knot, the basis that starts there is 0 and the one that ends there is 0 too
    b0 = cox_de_boor_bases(grid[:, :1].T.clone(), grid, 0)
    assert b0[0, 0].tolist() == [1.0] + [0.0] * (grid.shape[1] - 2)
    end = cox_de_boor_bases(grid[:, -1:].T.clone(), grid, 0)
    assert float(end.sum()) == 0.0


def test_cox_de_boor_with_repeated_knots_is_finite_and_partitions_unity() -> None:
    grid = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]], dtype=F64)
    x = torch.linspace(-1.0, 0.999, 41, dtype=F64).reshape(-1, 1)
    bases = cox_de_boor_bases(x, grid, 3)
    assert torch.isfinite(bases).all()
    torch.testing.assert_close(bases.sum(-1), torch.ones(41, 1, dtype=F64), atol=1e-12, rtol=0)
    layer = BSplineKANLayer(1, 1, grid_size=4, spline_order=3).double()
    layer.set_grid(grid)  # nondecreasing (repeated) knots are accepted
    with pytest.raises(ConfigError, match="nondecreasing"):
        layer.set_grid(grid.flip(-1))


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_cardinal_tables_work_on_batched_coordinates(order: int) -> None:
    t = torch.rand(3, 4, dtype=F64)
    values = cardinal_bspline_values(t, order)
    flat = cardinal_bspline_values(t.reshape(-1), order)
    assert values.shape == (3, 4, order + 1)
    torch.testing.assert_close(values.reshape(-1, order + 1), flat)
    torch.testing.assert_close(values.sum(-1), torch.ones(3, 4, dtype=F64))
    deriv = cardinal_bspline_derivatives(t, order)
    assert deriv.shape == (3, 4, order + 1) and deriv.dtype == F64
    torch.testing.assert_close(
        deriv.reshape(-1, order + 1), cardinal_bspline_derivatives(t.reshape(-1), order)
    )


def test_the_basis_descriptor_names_everything_a_codebook_needs() -> None:
    layer = BSplineKANLayer(3, 2, grid_size=4, spline_order=2, grid_range=(-2.0, 1.0))
    basis = bspline_basis(layer)
    assert basis.family == "bspline" and basis.coef_dim == layer.coef_dim == 4 + 2 + 1
    assert basis.params == {
        "grid_size": 4,
        "order": 2,
        "grid_range": [-2.0, 1.0],
        "n_spline": 6,
        "base": "silu",
    }
    no_base = BSplineKANLayer(3, 2, grid_size=4, spline_order=2, base_activation="zero")
    assert "base" not in bspline_basis(no_base).params


# -- artifact -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from metacluster.artifact import write_artifact
    from metacluster.compress import MetaClusterConfig, compress
    from metacluster.data import load_dataset
    from metacluster.kan import build_kan

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_kan("bspline", [64, 8, 10]).eval()
    cfg = MetaClusterConfig(
        k=4,
        regress_steps=10,
        meta_epochs=1,
        soft_epochs=0,
        finetune_epochs=1,
        kmeans_iters=3,
        kmeans_restarts=1,
        device="cpu",
    )
    compressed, report = compress(model, cfg, load_dataset("digits"))
    path = tmp_path_factory.mktemp("art") / "m.mcz"
    write_artifact(compressed, path, report)
    return {"path": path, "report": report, "compressed": compressed}


def test_the_manifest_records_the_reports_metrics(written: dict[str, Any]) -> None:
    from metacluster.artifact import read_manifest

    manifest, _ = read_manifest(written["path"])
    report = written["report"]
    assert manifest["metrics"] == {
        "metric": report.metric,
        "before": report.before,
        "after": report.after,
        "k": report.k,
    }
    assert manifest["cfg"]["k"] == 4


def test_is_artifact_tells_artifacts_from_other_safetensors(
    written: dict[str, Any], tmp_path: Path
) -> None:
    from metacluster.artifact import is_artifact

    assert is_artifact(written["path"])
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"), {"format": "pt"})
    assert not is_artifact(tmp_path / "plain.safetensors")
    (tmp_path / "junk.mcz").write_bytes(b"not a safetensors file")
    assert not is_artifact(tmp_path / "junk.mcz")


def _rewrap(path: Path, out: Path, manifest: Any, header: str | None = None) -> None:
    """The artifact's payload with another (deflated) manifest in front."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        blob = f.get_tensor("p").numpy().tobytes()
        length = int((f.metadata() or {})["mcz"].split(":")[1])
    packed = zlib.compress(json.dumps(manifest).encode())
    new = packed + blob[length:]
    tensor = torch.frombuffer(bytearray(new), dtype=torch.uint8)
    save_file({"p": tensor}, str(out), {"mcz": header or f"2:{len(packed)}"})


def test_a_manifest_that_is_not_an_object_or_claims_too_much_is_refused(
    written: dict[str, Any], tmp_path: Path
) -> None:
    from metacluster.artifact import read_manifest

    _rewrap(written["path"], tmp_path / "list.mcz", [1, 2, 3])
    with pytest.raises(ArtifactError):
        read_manifest(tmp_path / "list.mcz")
    manifest, _ = read_manifest(written["path"])
    _rewrap(written["path"], tmp_path / "v9.mcz", {**manifest, "v": 9})
    with pytest.raises(ArtifactError):
        read_manifest(tmp_path / "v9.mcz")
    _rewrap(written["path"], tmp_path / "long.mcz", manifest, header="2:99999999")
    with pytest.raises(ArtifactError):
        read_manifest(tmp_path / "long.mcz")


# -- k-means ----------------------------------------------------------------------------------
def test_kmeans_accepts_k_from_one_to_n_and_refuses_bad_input() -> None:
    from metacluster.compress.numeric.kmeans import kmeans

    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    one = kmeans(x, 1, seed=0, iters=5, restarts=1)
    np.testing.assert_allclose(one.centroids[0], x.mean(0), atol=1e-5)
    full = kmeans(x, 40, seed=0, iters=5, restarts=1)
    assert sorted(full.assignment.tolist()) == list(range(40)) and full.inertia < 1e-6
    with pytest.raises(ConfigError, match="k=41"):
        kmeans(x, 41)
    with pytest.raises(ConfigError, match="k=0"):
        kmeans(x, 0)
    with pytest.raises(ConfigError, match="non-empty"):
        kmeans(x[:, 0], 2)  # 1-D
    with pytest.raises(ConfigError, match="non-empty"):
        kmeans(x[:0], 1)


def test_kmeans_with_fewer_distinct_points_than_k() -> None:
    from metacluster.compress.numeric.kmeans import kmeans, kmeans_plus_plus

    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 3 distinct points
    seeds = kmeans_plus_plus(x, 5, np.random.default_rng(0))
    assert seeds.shape == (5, 3) and np.isfinite(seeds).all()
    assert {tuple(r) for r in seeds.tolist()} == {tuple(r) for r in np.eye(3).tolist()}
    res = kmeans(x, 5, seed=0, iters=5, restarts=2)
    # (faiss splits duplicate centroids by a hair: inertia stays ~0)
    assert np.isfinite(res.centroids).all() and res.inertia < 1e-3


def test_every_row_is_assigned_when_the_assignment_runs_in_chunks() -> None:
    """Many centroids in a wide space: the nearest-centroid search goes block by block
    (a few MB at a time); every row of every block must get its nearest centroid."""
    from metacluster.compress.numeric.kmeans import kmeans

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    res = kmeans(x, 300, seed=0, iters=2, restarts=1)
    d = ((x[:, None, :].astype(np.float64) - res.centroids[None].astype(np.float64)) ** 2).sum(2)
    assert np.array_equal(res.assignment, d.argmin(1))
    assert res.inertia == pytest.approx(float(d.min(1).sum()), rel=1e-4)


def test_an_artifact_keeps_moved_grids_dense_params_and_residual_codebooks(
    tmp_path: Path,
) -> None:
    """The parts of a model the default test models lack: per-input knots moved by a
    grid update (stored as grids), node affines and a LayerNorm (dense "other"
    parameters, here in float16), and a residual codebook. The artifact must give the
    compressed model's outputs, and float16 must store the dense parts smaller."""
    from metacluster.artifact import load_artifact, read_manifest, write_artifact
    from metacluster.compress import MetaClusterConfig, compress
    from metacluster.data import load_dataset
    from metacluster.kan import KANModel, LayerNorm, PyKANLayer

    torch.manual_seed(1)
    torch.set_num_threads(1)
    first = PyKANLayer(64, 8, 5, 3, (-1.0, 1.0), "silu")
    grid = first.grid.detach().clone()
    grid += torch.linspace(-0.3, 0.3, 64)[:, None]  # every input its own knots
    first.set_grid(grid)
    with torch.no_grad():
        first.node_bias.normal_(0, 0.1)
        first.node_scale.uniform_(0.8, 1.2)
    norm = LayerNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0, 0.1)
    model = KANModel([first, norm, PyKANLayer(8, 10, 5, 3, (-1.0, 1.0), "silu")]).eval()
    data = load_dataset("digits")
    sizes = {}
    for dtype in ("float32", "float16"):
        cfg = MetaClusterConfig(
            k=4,
            residual_k=2,
            regress_steps=10,
            meta_epochs=1,
            soft_epochs=0,
            finetune_epochs=1,
            kmeans_iters=3,
            kmeans_restarts=1,
            device="cpu",
            other_dtype=dtype,
        )
        compressed, report = compress(model, cfg, data)
        path = tmp_path / f"{dtype}.mcz"
        sizes[dtype] = write_artifact(compressed, path, report).bytes
        manifest, _ = read_manifest(path)
        assert manifest["other"], "dense parameters and grids are stored"
        assert any(cb.get("r") for cb in manifest["cb"]), "a residual codebook is stored"
        loaded = load_artifact(path)
        x = data.x_test[:64]
        with torch.no_grad():
            want, got = compressed(x), loaded(x)
        tol = 1e-5 if dtype == "float32" else 5e-2
        assert (want - got).abs().max().item() <= tol, dtype
        if dtype == "float32":
            torch.testing.assert_close(loaded.layers[0].grid, compressed.layers[0].grid)
    assert sizes["float16"] < sizes["float32"]
