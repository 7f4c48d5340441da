"""The packed artifact: round trip equality (fp32, fp16, rANS), compact size, hash
verification, clear errors on corrupt files, and export + re-import equality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from metacluster.artifact import (
    artifact_bytes,
    is_artifact,
    load_artifact,
    read_manifest,
    write_artifact,
)
from metacluster.compress import ArtifactSizer, CompressedKAN, MetaClusterConfig, compress
from metacluster.compress.numeric.packing import bits_for
from metacluster.data import Dataset, load_dataset
from metacluster.errors import ArtifactError
from metacluster.kan import build_kan
from metacluster.kan.model import KANModel


def _config(**kw: Any) -> MetaClusterConfig:
    base: dict[str, Any] = {
        "method": "metacluster",
        "k": 8,
        "regress_steps": 30,
        "meta_epochs": 1,
        "soft_epochs": 1,
        "soft_min_steps": 0,
        "finetune_epochs": 1,
        "kmeans_iters": 5,
        "kmeans_restarts": 1,
        "device": "cpu",
    }
    base.update(kw)
    return MetaClusterConfig(**base)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def model() -> KANModel:
    torch.manual_seed(0)
    return build_kan("bspline", [64, 16, 10]).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"codebook_dtype": "float16", "other_dtype": "float16"},
        {"entropy": "rans"},
        {"entropy": "none", "scope": "global"},
    ],
)
def test_round_trip_outputs_equal(
    model: KANModel, digits: Dataset, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    torch.set_num_threads(1)
    compressed, report = compress(model, _config(**overrides), digits, sizer=ArtifactSizer())
    info = write_artifact(compressed, tmp_path / "m.mcz", report)
    assert info.bytes == (tmp_path / "m.mcz").stat().st_size == report.bytes_after
    loaded = load_artifact(tmp_path / "m.mcz")
    assert isinstance(loaded, CompressedKAN)
    x = digits.x_test
    with torch.no_grad():
        assert (loaded(x) - compressed(x)).abs().max().item() <= 1e-5
    manifest, _ = read_manifest(tmp_path / "m.mcz")
    coding = {cb["x"] for cb in manifest["cb"]}
    if overrides.get("entropy") == "rans":
        assert coding == {"rans"}
    if overrides.get("entropy") == "none":
        assert coding == {"packed"} and len(manifest["cb"]) == 1
    if overrides.get("codebook_dtype") == "float16":
        assert {cb["dt"] for cb in manifest["cb"]} == {"f2"}
    assert manifest["metrics"]["k"] == 8 and manifest["method"] == "metacluster"


def test_manifest_contents_and_one_payload_tensor(
    model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    compressed, report = compress(model, _config(), digits)
    path = tmp_path / "m.mcz"
    write_artifact(compressed, path, report)
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["p"]
        header = (f.metadata() or {})["mcz"]
    version, length = header.split(":")
    manifest, payload = read_manifest(path)
    assert version == "2" and manifest["v"] == 2 and int(length) < 800  # deflated
    assert manifest["model"] == compressed.config()
    assert manifest["layers"] == ["layers.0", "layers.1"] and manifest["grouping"] == "shared"
    assert manifest["other"] == []  # default grids are rebuilt from the config, not stored
    assert MetaClusterConfig.from_dict(
        {**MetaClusterConfig().to_dict(), **manifest["cfg"]}
    ) == report_config(report)
    # the file is the payload plus the deflated manifest plus the safetensors header
    packed = sum(
        (cb["n"] * bits_for(cb["k"]) + 7) // 8 + cb["k"] * cb["s"] * 4 for cb in manifest["cb"]
    )
    assert len(payload) <= packed
    assert path.stat().st_size < len(payload) + int(length) + 160


def report_config(report: Any) -> MetaClusterConfig:
    return MetaClusterConfig.from_dict(report.config)


def test_byte_breakdown_sums_to_the_file_size(
    model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    m = build_kan("pykan_bspline", [64, 6, 10], grid_size=3)
    with torch.no_grad():  # every input its own (uniform) grid: stored as two knots each
        grid = m.get_buffer("layers.0.grid")
        grid.add_(torch.linspace(0, 0.3, grid.shape[0])[:, None])
    compressed, report = compress(m, _config(k=4), digits, sizer=ArtifactSizer())
    info = write_artifact(compressed, tmp_path / "b.mcz", report)
    parts = report.bytes_breakdown
    assert set(parts) == {"codebooks", "indices", "grids", "dense", "manifest", "container"}
    assert sum(parts.values()) == info.bytes == report.bytes_after
    assert parts["grids"] == 64 * 2 * 4  # layer 0: 64 rows of (first, last knot), layer 1: default
    assert parts["dense"] == 4 * 4 * (6 + 10)  # pykan's node and subnode affines, fine-tuned
    per_layer = {layer["name"]: layer["bytes_breakdown"] for layer in report.layers}
    assert per_layer["layers.0"]["grids"] == parts["grids"]
    assert sum(sum(p.values()) for p in per_layer.values()) == sum(
        parts[k] for k in ("codebooks", "indices", "grids", "dense")
    )


def test_a_uniform_grid_a_few_ulps_off_is_not_stored(digits: Dataset, tmp_path: Path) -> None:
    """Our efficient-kan knots are efficient-kan's float32 arithmetic (arange * h + lo),
    bit for bit; the same knots computed otherwise (float64, then rounded) differ in the
    last bits, and are still four numbers of the config, not a stored tensor."""
    m = build_kan("bspline", [64, 6, 10])
    for _, layer in m.kan_layers():
        g, k = layer.grid_size, layer.spline_order  # type: ignore[attr-defined]
        upstream = torch.arange(-k, g + k + 1) * (2 / g) + -1
        assert torch.equal(upstream, layer.grid[0])  # type: ignore[index]
        other = (torch.arange(-k, g + k + 1, dtype=torch.float64) * (2 / g) - 1).float()
        assert not torch.equal(other, upstream) and torch.allclose(other, upstream, atol=1e-6)
        layer.grid.copy_(other.expand_as(layer.grid))  # type: ignore[operator]
    compressed, report = compress(m, _config(k=4), digits, sizer=ArtifactSizer())
    write_artifact(compressed, tmp_path / "u.mcz", report)
    manifest, _ = read_manifest(tmp_path / "u.mcz")
    assert manifest["other"] == [] and report.bytes_breakdown["grids"] == 0
    fresh = build_kan("bspline", [64, 6, 10])
    for (_, ours), (_, default) in zip(compressed.kan_layers(), fresh.kan_layers(), strict=True):
        assert torch.equal(ours.grid, default.grid)  # type: ignore[arg-type]
    loaded = load_artifact(tmp_path / "u.mcz")
    with torch.no_grad():
        assert torch.equal(loaded(digits.x_test), compressed(digits.x_test))


@pytest.mark.parametrize("policy", ["shared", "separate"])
def test_moved_grids_share_a_codebook_unless_separate(
    digits: Dataset, tmp_path: Path, policy: str
) -> None:
    m = build_kan("bspline", [64, 16, 10])
    grid = m.get_buffer("layers.0.grid")
    with torch.no_grad():  # a per-input grid (as after a grid update): stored, and grouped
        grid[0] += 0.01 * torch.arange(grid.shape[1], dtype=grid.dtype)
    compressed, report = compress(m, _config(k=4, grid_policy=policy), digits)
    write_artifact(compressed, tmp_path / "g.mcz", report)
    manifest, _ = read_manifest(tmp_path / "g.mcz")
    assert [e[0] for e in manifest["other"]] == ["layers.0.grid"]
    assert manifest["other"][0][1].startswith("g:u,u,=1")  # two uniform rows, the rest repeat
    # shared: one codebook per layer; separate: layer 0 has two grid groups
    assert len(manifest["cb"]) == (2 if policy == "shared" else 3)
    loaded = load_artifact(tmp_path / "g.mcz")
    with torch.no_grad():
        assert torch.equal(loaded(digits.x_test), compressed(digits.x_test))


def test_corrupt_files_give_artifact_errors(
    model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    compressed, report = compress(model, _config(), digits)
    data = bytearray(artifact_bytes(compressed, report))
    data[-5] ^= 0xFF  # flip payload bits
    bad = tmp_path / "bad.mcz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(bad)
    junk = tmp_path / "junk.mcz"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ArtifactError, match="not a readable artifact"):
        load_artifact(junk)
    assert not is_artifact(junk) and is_artifact(tmp_path / "missing") is False
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "missing.mcz")


def test_plain_model_is_not_an_artifact(model: KANModel, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors")
    )
    assert not is_artifact(tmp_path / "m.safetensors")
    with pytest.raises(ArtifactError, match="no manifest"):
        load_artifact(tmp_path / "m.safetensors")
    with pytest.raises(ArtifactError, match="compressed model"):
        write_artifact(model, tmp_path / "x.mcz")  # type: ignore[arg-type]


def test_export_and_reimport_equal(model: KANModel, digits: Dataset, tmp_path: Path) -> None:
    formats = pytest.importorskip("metacluster.formats")
    if not hasattr(formats, "export_model") or not hasattr(formats, "load_model"):
        pytest.skip("metacluster.formats has no export_model/load_model yet")
    compressed, report = compress(model, _config(), digits)
    write_artifact(compressed, tmp_path / "m.mcz", report)
    loaded = load_artifact(tmp_path / "m.mcz")
    for fmt in ("metacluster", "efficient-kan"):
        out = tmp_path / f"export-{fmt}"
        formats.export_model(loaded, fmt, out)
        back = formats.load_model(out, format=fmt)
        with torch.no_grad():
            diff = (back(digits.x_test) - loaded(digits.x_test)).abs().max().item()
        assert diff <= 1e-5, fmt
