"""The codebook-domain runtime equals the dense decompression: every family, every
artifact layout, odd shapes, batch 1 and empty batches, and the committed v1 fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_helpers import LAYOUTS, artifact
from torch import Tensor, nn

from metacluster.artifact import load_artifact
from metacluster.compress import CompressedKAN
from metacluster.errors import ConfigError
from metacluster.kan import Flatten, KANConv2d, Reshape, build_kan, family_names
from metacluster.kan.model import KANModel
from metacluster.runtime import CodebookKAN, CodebookLayer, resident_bytes
from metacluster.runtime.kernels import BAGS_FROM_ROWS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RTOL = 1e-5


def _randomize(model: KANModel, seed: int = 1) -> KANModel:
    """Other parameters (biases, LayerNorms, node affines) random so the runtime must use them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(".coef"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _models() -> dict[str, tuple[KANModel, tuple[int, ...]]]:
    torch.manual_seed(0)
    conv = {"input_shape": [2, 9, 7], "channels": [3, 5], "kernel_size": 3}
    return {
        "bspline": (build_kan("bspline", [7, 5, 3]), (7,)),
        "bspline_order2_nobase": (
            build_kan("bspline", [6, 4], spline_order=2, base_activation="zero"),
            (6,),
        ),
        "pykan_bspline": (build_kan("pykan_bspline", [5, 3, 2]), (5,)),
        "rbf": (build_kan("rbf", [7, 4, 3]), (7,)),
        "chebyshev": (build_kan("chebyshev", [5, 6, 2]), (5,)),
        "fourier": (build_kan("fourier", [5, 3, 2]), (5,)),
        "conv_bspline": (build_kan("conv_bspline", [4], **conv), (2 * 9 * 7,)),
        "conv_chebyshev": (build_kan("conv_chebyshev", [4], **conv), (2 * 9 * 7,)),
        "conv_groups_stride": (
            KANModel(
                [
                    Reshape([4, 7, 6]),
                    KANConv2d(4, 6, [3, 2], stride=2, padding=1, groups=2, norm="batch"),
                    Flatten(),
                ]
            ),
            (4 * 7 * 6,),
        ),
    }


MODELS = _models()


def _max_rel(a: Tensor, b: Tensor) -> float:
    scale = float(b.abs().max()) if b.numel() else 1.0
    return float((a - b).abs().max()) / max(scale, 1e-12) if a.numel() else 0.0


def _check(path: Path, shape: tuple[int, ...], batches: tuple[int, ...]) -> CodebookKAN:
    dense = load_artifact(path)
    fast = load_artifact(path, runtime="compressed")
    assert isinstance(dense, CompressedKAN) and isinstance(fast, CodebookKAN)
    gen = torch.Generator().manual_seed(3)
    for batch in batches:
        x = torch.randn(batch, *shape, generator=gen) * 1.5  # beyond the grids too
        with torch.no_grad():
            want, got = dense.eval()(x), fast(x)
        assert got.shape == want.shape
        assert _max_rel(got, want) <= RTOL, (batch, _max_rel(got, want))
    return fast


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compressed_runtime_equals_dense(family: str, layout: str, tmp_path: Path) -> None:
    model, shape = MODELS[family]
    path = artifact(_randomize(model), layout, tmp_path / "m.mcz")
    fast = _check(path, shape, (0, 1, 3, BAGS_FROM_ROWS + 5))
    compressed = [m for m in fast.layers if isinstance(m, CodebookLayer)]
    if layout == "int8":  # no codebook form: the layers run dense, and say so
        assert not compressed and fast.dense_layers
    else:
        assert compressed and not fast.dense_layers


def test_pykan_moved_grids_separate_groups(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomize(build_kan("pykan_bspline", [4, 3]))
    layer = model.layers[0]
    grid = layer.grid.clone()
    grid[1] = torch.sort(grid[1] * 1.7 + 0.1).values  # two inputs on other grids
    grid[3] = torch.sort(grid[3] ** 3).values
    layer.set_grid(grid)
    for layout in ("separate", "vq"):
        path = artifact(model, layout, tmp_path / f"{layout}.mcz")
        _check(path, (4,), (1, 2, 20))


@pytest.mark.parametrize("name", ["bspline_v1.mcz", "pykan_moved_grid_v1.mcz"])
def test_version_1_fixtures(name: str) -> None:
    fast = _check(FIXTURES / name, (load_artifact(FIXTURES / name).layers[0].in_features,), (1, 9))
    assert any(isinstance(m, CodebookLayer) for m in fast.layers)


def test_fixture_outputs_recorded_at_write_time() -> None:
    recorded = np.load(FIXTURES / "artifact_v1_outputs.npz")
    x = torch.from_numpy(recorded["x"])
    for name in ("bspline_v1", "pykan_moved_grid_v1"):
        fast = load_artifact(FIXTURES / f"{name}.mcz", runtime="compressed")
        with torch.no_grad():
            got = fast(x)
        assert _max_rel(got, torch.from_numpy(recorded[name])) <= RTOL


def test_resident_weights_are_codebooks_and_narrow_codes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_kan("bspline", [64, 32, 10])
    path = artifact(model, "vq", tmp_path / "m.mcz", k=16)
    fast = load_artifact(path, runtime="compressed")
    codes = [b for n, b in fast.named_buffers() if ".codes_" in n]
    assert codes and all(c.dtype == torch.uint8 for c in codes)
    # no dense coefficient tensor is held: 9 floats per edge would be 4 * 9 * 2368 bytes
    assert resident_bytes(fast) < resident_bytes(load_artifact(path)) / 5


def test_unknown_runtime_lists_the_known_ones(tmp_path: Path) -> None:
    path = artifact(build_kan("bspline", [3, 2]), "vq", tmp_path / "m.mcz")
    with pytest.raises(ConfigError, match="dense, compressed"):
        load_artifact(path, runtime="sparse")


def test_runtime_is_a_plain_module_for_evaluation() -> None:
    model = MODELS["bspline"][0]
    fast = CodebookKAN(list(model.layers), {"task": "classification"}, [])
    assert isinstance(fast, nn.Module)
    assert fast.predict(torch.zeros(5, 7)).shape == (5, 3)


@pytest.mark.parametrize("family", family_names())
def test_every_registered_family_runs_compressed(family: str, tmp_path: Path) -> None:
    """Each family the registry holds (today's and torch-conv-kan's, KAT's, Wav-KAN's)
    loads in the compressed runtime with the dense outputs, empty batch included; a
    family without the runtime hooks runs dense there and is named in dense_layers."""
    from metacluster.kan import get_family
    from metacluster.runtime import has_hooks

    torch.manual_seed(0)
    conv = get_family(family).kind == "conv"
    options = {"input_shape": [2, 9, 7], "channels": [3, 4], "kernel_size": 3} if conv else {}
    model = build_kan(family, [4] if conv else [6, 4, 3], **options)
    shape = (2 * 9 * 7,) if conv else (6,)
    fast = _check(artifact(model, "vq", tmp_path / "m.mcz"), shape, (0, 1, 13))
    hooked = [name for name, layer in model.kan_layers() if has_hooks(layer)]
    assert sorted(fast.dense_layers) == sorted(
        name for name, _ in model.kan_layers() if name not in hooked
    )
