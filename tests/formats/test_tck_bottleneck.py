"""torch-conv-kan's BottleNeckKAGNConv2DLayer, written by the upstream class itself (vendored
verbatim in reference/torch_conv_kan_upstream), imported, exported back with a strict
load, refusals, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kan_convs.kagn_bottleneck_conv import BottleNeckKAGNConv2DLayer
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model

FMT = "torch-conv-kan"


def _stack(groups: int = 1, degree: int = 3, seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    ref = Stack(
        [
            BottleNeckKAGNConv2DLayer(8, 16, 3, degree=degree, groups=groups, padding=1),
            BottleNeckKAGNConv2DLayer(16, 8, 3, degree=degree, groups=groups, stride=2),
        ]
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-like Gram betas
        for layer in ref.layers:
            layer.beta_weights.normal_(0.0, 0.3, generator=gen)
    return ref.eval()


def _config(groups: int) -> dict[str, object]:
    return {"layers": [{"padding": 1, "groups": groups}, {"stride": 2, "groups": groups}]}


def _save(tmp_path: Path, state: dict[str, torch.Tensor], config: dict[str, object]) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _images(seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 8, 9, 9, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("groups", "degree"), [(1, 3), (2, 2)])
def test_upstream_checkpoint_loads_and_exports_back(
    tmp_path: Path, groups: int, degree: int
) -> None:
    ref = _stack(groups, degree)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    path = _save(tmp_path, state, _config(groups))
    assert detect_format(path) == FMT
    model = load_model(path)
    assert [type(m).__name__ for m in model.layers] == ["GramBottleneckKANConv2d"] * 2
    layer = model.layers[0]
    inner = ref.layers[0].inner_dim
    assert layer.inner_dim == inner and layer.coef_dim == degree + 1
    assert layer.n_edges == groups * inner * inner * 9
    x = _images()
    assert_same_outputs(ref, model, x, fmt=FMT)
    files = export_model(model, FMT, tmp_path / "out" / "model.safetensors")
    from safetensors.torch import load_file

    back = load_file(str(files[0]))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    config = json.loads((tmp_path / "out" / "config.json").read_text())["layers"][1]
    assert config["layer_class"] == "BottleNeckKAGNConv2DLayer" and config["stride"] == [2, 2]
    again = fresh_outputs(lambda: _stack(groups, degree, seed=5), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)


def test_shapes_that_disagree_are_refused(tmp_path: Path) -> None:
    ref = _stack(groups=2)
    state = dict(ref.state_dict())
    state["layers.1.poly_weights"] = state["layers.1.poly_weights"][:, :, :-1]
    with pytest.raises(
        FormatError, match=r"layers\.1\.poly_weights has shape \(2, 4, 15, 3, 3\), expected"
    ):
        load_model(_save(tmp_path, state, _config(2)))
    state = dict(ref.state_dict())
    state["layers.0.inner_proj.1.weight"] = torch.zeros(4, 3, 1, 1)
    with pytest.raises(FormatError, match=r"layers\.0\.inner_proj\.1\.weight has shape \(4, 3"):
        load_model(_save(tmp_path, state, _config(2)))
    with pytest.raises(FormatError, match=r"layers\.0\.beta_weights says degree 3, but the config"):
        load_model(_save(tmp_path, ref.state_dict(), {"degree": 2}))
    with pytest.raises(FormatError, match=r"layers\.0\.poly_weights says groups 2, but the config"):
        load_model(_save(tmp_path, ref.state_dict(), {"groups": 1}))


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    def build() -> nn.Module:
        return Stack(
            [
                BottleNeckKAGNConv2DLayer(1, 16, 3, degree=3, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(16, 10),
            ]
        ).eval()

    spec = {
        "layers": [
            {"kind": "reshape", "options": {"shape": [1, 8, 8]}},
            {"kind": FMT, "prefix": "layers.0.", "options": {"padding": 1}},
            {"kind": "global_avg_pool"},
            {"kind": "flatten"},
            {"kind": "linear", "prefix": "layers.3."},
        ]
    }
    compress_and_reload(tmp_path, build, spec)
