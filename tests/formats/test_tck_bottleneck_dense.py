"""torch-conv-kan's dense BottleNeckGRAMLayer, written by the upstream class itself
(vendored verbatim in reference/torch_conv_kan_upstream/kans/layers.py), imported,
exported back with a strict load, refusals, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kans.layers import BottleNeckGRAMLayer, GRAMLayer
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, inspect_model, load_model

FMT = "torch-conv-kan"


def _stack(degree: int = 3, seed: int = 0, min_internal: int = 16) -> Stack:
    torch.manual_seed(seed)
    ref = Stack(
        [
            BottleNeckGRAMLayer(24, 20, degree=degree, min_internal=min_internal),
            BottleNeckGRAMLayer(20, 6, degree=degree, min_internal=min_internal),
        ]
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-like: betas, LayerNorm affine and biases off their init
        for layer in ref.layers:
            layer.beta_weights.normal_(0.0, 0.3, generator=gen)
            for t in (layer.norm.weight, layer.norm.bias, layer.outer_proj.bias):
                t.add_(torch.randn(t.shape, generator=gen) * 0.3)
    return ref.eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(16, 24, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("degree", "min_internal"), [(3, 16), (2, 4)])
def test_upstream_checkpoint_loads_and_exports_back(
    tmp_path: Path, degree: int, min_internal: int
) -> None:
    ref = _stack(degree, min_internal=min_internal)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert detect_format(tmp_path) == FMT
    model = load_model(tmp_path)
    assert model.meta["family"] == "gram"
    names = [type(m).__name__ for m in model.layers]
    assert names == ["GramBottleneckKANLayer", "LayerNorm", "SiLU"] * 2
    layer = model.layers[0]
    inner = ref.layers[0].inner_dim
    assert inner == (16 if min_internal == 16 else 4)  # upstream's width rule, both branches
    assert layer.inner_dim == inner and layer.coef_dim == degree + 1
    assert layer.n_edges == inner * inner
    x = _x()
    assert_same_outputs(ref, model, x, fmt=FMT)
    written = export_model(model, FMT, tmp_path / "out" / "kan.pt")
    back = torch.load(written[0], weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _stack(degree, seed=7, min_internal=min_internal), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)


def test_safetensors_export_names_the_class(tmp_path: Path) -> None:
    ref = _stack()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model = load_model(tmp_path)
    export_model(model, FMT, tmp_path / "out" / "model.safetensors")
    config = json.loads((tmp_path / "out" / "config.json").read_text())["layers"][1]
    assert config == {
        "layer_class": "BottleNeckGRAMLayer",
        "input_dim": 20,
        "output_dim": 6,
        "degree": 3,
        "inner_dim": 6,
    }


def test_plain_gram_layer_is_still_read_as_gram(tmp_path: Path) -> None:
    """The bottleneck override only fires with the projections present."""
    torch.manual_seed(0)
    torch.save(Stack([GRAMLayer(5, 4, degree=2)]).state_dict(), tmp_path / "m.pt")
    assert type(load_model(tmp_path / "m.pt").layers[0]).__name__ == "GramKANLayer"


def _save(tmp_path: Path, state: dict[str, torch.Tensor], config: dict[str, object]) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_shapes_that_disagree_are_refused(tmp_path: Path) -> None:
    ref = _stack()
    state = dict(ref.state_dict())
    state["layers.1.grams_basis_weights"] = state["layers.1.grams_basis_weights"][:, :, :-1]
    with pytest.raises(
        FormatError,
        match=r"layers\.1\.grams_basis_weights has shape \(6, 6, 3\), expected \(6, 6, 4\)",
    ):
        load_model(_save(tmp_path, state, {}))
    state = dict(ref.state_dict())
    state["layers.0.outer_proj.weight"] = torch.zeros(20, 15)
    with pytest.raises(
        FormatError, match=r"layers\.0\.outer_proj\.weight has shape \(20, 15\), expected"
    ):
        load_model(_save(tmp_path, state, {}))
    state = dict(ref.state_dict())
    state["layers.0.norm.bias"] = torch.zeros(19)
    with pytest.raises(FormatError, match=r"layers\.0\.norm\.bias has shape \(19,\)"):
        load_model(_save(tmp_path, state, {}))
    with pytest.raises(FormatError, match=r"layers\.0\.beta_weights says degree 3, but the config"):
        load_model(_save(tmp_path, ref.state_dict(), {"degree": 2}))


def test_inspect_counts_the_inner_edges_and_every_tensor(tmp_path: Path) -> None:
    ref = _stack()
    torch.save(ref.state_dict(), tmp_path / "m.pt")
    info = inspect_model(tmp_path / "m.pt")
    assert info["format"] == FMT and info["kind"] == "dense"
    # 24 -> 20: D = min_internal 16; 20 -> 6: D = min(16, 20, 6) = 6
    assert [(x["in"], x["out"], x["edges"]) for x in info["layers"]] == [
        (24, 20, 16 * 16),
        (20, 6, 6 * 6),
    ]
    assert info["params"] == sum(t.numel() for t in ref.state_dict().values())
    assert info["coef_params"] == 16 * 16 * 4 + 6 * 6 * 4  # the base weights stay dense


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    def build() -> nn.Module:
        return Stack(
            [
                BottleNeckGRAMLayer(64, 16, degree=3, min_internal=8),
                BottleNeckGRAMLayer(16, 10, degree=3, min_internal=8),
            ]
        ).eval()

    compress_and_reload(tmp_path, build, None)


def test_a_bottleneck_kagn_model_with_dropouts_and_l1_reads(tmp_path: Path) -> None:
    """What kans.kan.BottleNeckKAGN([24, 32, 10], dropout=0.1, l1_decay=1e-4) holds
    (kans/kan.py is not vendored: it builds exactly these modules): Dropouts between
    the layers and all but the last wrapped in utils.L1 (keys `layers.1.module.*`)."""
    from utils.regularization import L1

    torch.manual_seed(0)
    ref = Stack(
        [
            nn.Dropout(0.1),
            L1(BottleNeckGRAMLayer(24, 32), 1e-4),
            nn.Dropout(0.1),
            BottleNeckGRAMLayer(32, 10),
        ]
    ).eval()
    assert "layers.1.module.grams_basis_weights" in ref.state_dict()
    torch.save(ref.state_dict(), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    assert [type(m).__name__ for m in model.layers][::3] == ["GramBottleneckKANLayer"] * 2
    assert_same_outputs(ref, model, _x(), fmt=FMT)
