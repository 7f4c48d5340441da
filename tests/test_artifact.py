"""The packed artifact: round trip equality (fp32, fp16, rANS), compact size, hash
verification, clear errors on corrupt files, and export + re-import equality."""

from __future__ import annotations

import json
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
from metacluster.compress import CompressedKAN, MetaClusterConfig, compress
from metacluster.data import Dataset, load_dataset
from metacluster.errors import ArtifactError
from metacluster.kan import build_kan
from metacluster.kan.model import KANModel
from metacluster.workflow import ArtifactSizer


def _config(**kw: Any) -> MetaClusterConfig:
    base: dict[str, Any] = {
        "k": 8,
        "regress_steps": 30,
        "meta_epochs": 1,
        "soft_epochs": 1,
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
        manifest = json.loads((f.metadata() or {})["mcz"])
    assert manifest["v"] == 1 and manifest["model"] == compressed.config()
    assert manifest["layers"] == ["layers.0", "layers.1"]
    assert [cb["b"] for cb in manifest["cb"]] == [3, 3]  # ceil(log2 8)
    assert manifest["other"] == []  # uniform grids are rebuilt from the config, not stored
    assert MetaClusterConfig.from_dict(
        {**MetaClusterConfig().to_dict(), **manifest["cfg"]}
    ) == report_config(report)
    # indices dominate: the file is within a small header of the packed payload
    packed = sum((cb["n"] * cb["b"] + 7) // 8 + cb["k"] * cb["s"] * 4 for cb in manifest["cb"])
    assert path.stat().st_size < packed + 2500


def report_config(report: Any) -> MetaClusterConfig:
    return MetaClusterConfig.from_dict(report.config)


def test_non_default_buffers_are_stored(model: KANModel, digits: Dataset, tmp_path: Path) -> None:
    m = build_kan("bspline", [64, 16, 10])
    grid = m.get_buffer("layers.0.grid")
    with torch.no_grad():  # a per-input grid (as after a grid update): stored, and grouped
        grid[0] += 0.01 * torch.arange(grid.shape[1], dtype=grid.dtype)
    m.load_state_dict(m.state_dict())
    compressed, report = compress(m, _config(k=4), digits)
    write_artifact(compressed, tmp_path / "g.mcz", report)
    manifest, _ = read_manifest(tmp_path / "g.mcz")
    assert [e[0] for e in manifest["other"]] == ["layers.0.grid"]
    assert len(manifest["cb"]) == 3  # layer 0: two grid groups, layer 1: one
    loaded = load_artifact(tmp_path / "g.mcz")
    with torch.no_grad():
        assert (loaded(digits.x_test) - compressed(digits.x_test)).abs().max().item() <= 1e-5


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
