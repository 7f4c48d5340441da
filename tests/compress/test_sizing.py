"""compress/sizing.py and container.py: every estimate against the written file, one build
per run, and the library's `compress()` reporting what the CLI reports.

The cases are scripts/artifact_digests.py's: every registered method on a B-spline MLP,
the rbf, chebyshev, fourier and conv_bspline families, and a byte budget (tiny untrained
models on "digits", about 20 s in all on one thread).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import metacluster as mc
from metacluster.artifact import read_manifest
from metacluster.compress import MetaClusterConfig, container, plan, sizing
from metacluster.compress.pipeline.registry import method_names
from metacluster.data import Dataset
from metacluster.formats import save_model
from metacluster.kan.model import KANModel
from metacluster.kan.summary import describe_model
from metacluster.training import build_model_for
from metacluster.workflow import compress_file

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_KINDS = ("codebooks", "indices", "grids", "dense")


def _digests() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "digests", ROOT / "scripts" / "artifact_digests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES: dict[str, tuple[str, list[int], dict[str, Any]]] = _digests().cases()


def _model(data: Dataset, family: str, widths: list[int]) -> KANModel:
    torch.manual_seed(0)
    conv = {"input_shape": (1, 8, 8), "channels": [2], "grid_size": 3}
    return build_model_for(data, family, widths, **(conv if family.startswith("conv") else {}))


def test_the_cases_cover_every_method() -> None:
    assert {c[2]["method"] for c in CASES.values()} == set(method_names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_estimates_against_the_written_file(name: str, digits: Dataset, tmp_path: Path) -> None:
    family, widths, config_dict = CASES[name]
    config = MetaClusterConfig.from_dict(config_dict)
    model = _model(digits, family, widths)
    source = tmp_path / "model.safetensors"
    save_model(model, source)
    the_plan = plan(describe_model(model), digits.meta(), config)
    report = compress_file(source, digits, config, tmp_path / "a.mcz")
    written = (tmp_path / "a.mcz").stat().st_size
    manifest, _ = read_manifest(tmp_path / "a.mcz")
    assert report.bytes_after == written == sum(report.bytes_breakdown.values())

    compressed = mc.load_artifact(tmp_path / "a.mcz")
    # the payload estimate is the payload written, kind by kind
    estimate = sizing.payload_bytes(compressed, report.config)
    assert estimate.by_kind == {k: report.bytes_breakdown[k] for k in PAYLOAD_KINDS}
    # the header estimate (manifest + container) leans high: measured -1%..+11% of the file's
    header = report.bytes_breakdown["manifest"] + report.bytes_breakdown["container"]
    assert -0.05 * header <= sizing.model_header_bytes(compressed) - header <= 0.15 * header
    # the plan's, data-free (indices bit-packed, no rANS): within a factor of 2
    if config.budgeted:
        assert config.target_ratio is not None
        assert written <= report.bytes_before / config.target_ratio
    else:
        (planned,) = the_plan.expected_bytes.values()
        assert written / 2 <= planned <= 2 * written, (planned, written)
    assert manifest["method"] == config.method


def test_the_artifact_is_built_once_and_written_as_sized(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[bytes] = []
    real = container.build_artifact

    def counting(*args: Any, **kwargs: Any) -> container.Built:
        built = real(*args, **kwargs)
        builds.append(built.data)
        return built

    monkeypatch.setattr(container, "build_artifact", counting)
    monkeypatch.setattr("metacluster.artifact.build_artifact", counting)
    family, widths, config_dict = CASES["bspline-dkm"]
    source = tmp_path / "model.safetensors"
    save_model(_model(digits, family, widths), source)
    compress_file(source, digits, MetaClusterConfig.from_dict(config_dict), tmp_path / "a.mcz")
    assert len(builds) == 1
    assert (tmp_path / "a.mcz").read_bytes() == builds[0]


@pytest.mark.parametrize("name", ["bspline-dkm", "bspline-int4", "bspline-dkm-budget"])
def test_the_library_reports_what_the_cli_reports(
    name: str, digits: Dataset, tmp_path: Path
) -> None:
    """`mc.compress(...)` (the callable package) and `metacluster compress` (the CLI's
    use case) give the same bytes and ratio for the same run."""
    family, widths, config_dict = CASES[name]
    config = MetaClusterConfig.from_dict(config_dict)
    source = tmp_path / "model.safetensors"
    save_model(_model(digits, family, widths), source)
    cli = compress_file(source, digits, config, tmp_path / "a.mcz")
    _, library = mc.compress(_model(digits, family, widths), config, digits)
    assert (library.bytes_before, library.bytes_after) == (cli.bytes_before, cli.bytes_after)
    assert library.ratio == cli.ratio
    assert library.bytes_before_source == cli.bytes_before_source


def test_an_estimate_sizer_still_estimates(digits: Dataset) -> None:
    """EstimateSizer (asked for) counts the payload only: smaller than the file."""
    family, widths, config_dict = CASES["bspline-dkm"]
    config = MetaClusterConfig.from_dict(config_dict)
    _, exact = mc.compress(_model(digits, family, widths), config, digits)
    _, estimated = mc.compress(
        _model(digits, family, widths), config, digits, sizer=sizing.EstimateSizer()
    )
    assert estimated.bytes_before_source == "estimate:state_dict"
    assert estimated.bytes_after < exact.bytes_after


@pytest.mark.parametrize("first", ["package", "attribute"])
def test_mc_compress_is_the_callable_package_in_any_import_order(first: str) -> None:
    code = f"""
import sys
import metacluster as mc
if {first!r} == "package":
    import metacluster.compress
    seen = mc.compress
else:
    seen = mc.compress
    import metacluster.compress
from metacluster.compress import compress
assert seen is mc.compress is sys.modules["metacluster.compress"], seen
assert callable(mc.compress) and mc.compress.compress is compress
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_one_value_size() -> None:
    assert (sizing.value_bytes("float16"), sizing.value_bytes("float32")) == (2, 4)
    assert sizing.codebook_bits(10, 3, 4, "float32") == 4 * 3 * 32 + 10 * 2
    assert sizing.codebook_bits(3, 3, 16, "float16") == 3 * 3 * 16 + 3 * 2  # K <= edges
    assert sizing.header_bytes(2) == sizing.header_bytes(2, sizing.MODEL_CONFIG_BYTES + 40)
