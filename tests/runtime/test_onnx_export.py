"""`metacluster export A.mcz --to onnx`: onnxruntime runs the compressed graph (and the
dense one with --dense) with outputs equal to our runtime within 1e-4, any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from runtime_helpers import artifact

from metacluster.artifact import load_artifact
from metacluster.cli import cli
from metacluster.kan import build_kan

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CONV = {"input_shape": [2, 9, 7], "channels": [3]}
MODELS = {
    "bspline": ("bspline", [9, 6, 3], {}),
    "pykan_bspline": ("pykan_bspline", [5, 4], {}),
    "rbf": ("rbf", [7, 4, 3], {}),
    "chebyshev": ("chebyshev", [5, 3], {}),
    "fourier": ("fourier", [5, 3], {}),
    "conv_bspline": ("conv_bspline", [4], CONV),
    "conv_chebyshev": ("conv_chebyshev", [4], CONV),
}


def _export(mcz: Path, out: Path, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(
        cli, ["export", str(mcz), "--to", "onnx", "--out", str(out), "--json", *extra]
    )
    assert result.exit_code == 0, result.output
    info: dict[str, object] = json.loads(result.stdout)
    return info


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dense", [False, True])
def test_onnxruntime_matches_our_runtime(name: str, dense: bool, tmp_path: Path) -> None:
    family, widths, options = MODELS[name]
    torch.manual_seed(0)
    mcz = artifact(build_kan(family, widths, **options), "vq", tmp_path / "m.mcz")
    info = _export(mcz, tmp_path / "m.onnx", *(["--dense"] if dense else []))
    ops = info["ops"]
    assert isinstance(ops, dict)
    # the compressed graph gathers from the codebook projections and sums over edges
    assert ("ReduceSum" in ops and "Gather" in ops) if not dense else "ReduceSum" not in ops
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    ours = load_artifact(mcz, runtime="compressed")
    shape = info["input_shape"]
    assert isinstance(shape, list)
    for batch in (1, 3, 17):  # dynamic batch
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = ours(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def _float_tensor_sizes(path: Path) -> list[int]:
    """Element counts of every float tensor the graph stores (initializers, constants)."""
    graph = onnx.load(str(path)).graph
    tensors = list(graph.initializer)
    tensors += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    return [int(np.prod(t.dims)) for t in tensors if t.data_type == onnx.TensorProto.FLOAT]


def test_compressed_graph_stores_codes_not_vectors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mcz = artifact(build_kan("bspline", [64, 32, 10]), "vq", tmp_path / "m.mcz", k=16)
    _export(mcz, tmp_path / "c.onnx")
    _export(mcz, tmp_path / "d.onnx", "--dense")
    per_edge = 32 * 64 * 9  # the first layer's dense coefficients
    assert max(_float_tensor_sizes(tmp_path / "d.onnx")) >= per_edge
    assert max(_float_tensor_sizes(tmp_path / "c.onnx")) < 32 * 64  # < one float per edge
    codes = [t for t in onnx.load(str(tmp_path / "c.onnx")).graph.initializer if "codes" in t.name]
    assert {t.data_type for t in codes} == {onnx.TensorProto.UINT8}
    assert sum(int(np.prod(t.dims)) for t in codes) == 64 * 32 + 32 * 10


def test_onnx_export_of_a_non_artifact_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"junk")
    result = CliRunner().invoke(
        cli, ["export", str(bad), "--to", "onnx", "--out", str(tmp_path / "m.onnx")]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --to onnx needs an artifact")
