"""torch-conv-kan's BottleNeckReLUKANConv2DLayer, written by the upstream class itself
(vendored verbatim in reference/torch_conv_kan_upstream), imported, exported back with a
strict load, refusals, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kan_convs.relukan_bottleneck_conv import BottleNeckReLUKANConv2DLayer
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model

FMT = "torch-conv-kan"


def materialized(model: nn.Module) -> nn.Module:
    """Upstream's phases are `expand`ed views (stride 0): an optimizer step or a
    `load_state_dict` into them fails ("more than one element of the written-to tensor
    refers to a single memory location"). A user who trains or reloads the layer clones
    them first; so do the tests. The values are unchanged."""
    for layer in model.modules():
        if isinstance(layer, BottleNeckReLUKANConv2DLayer):
            for name in ("phase_low", "phase_high"):
                old = getattr(layer, name)
                setattr(layer, name, nn.Parameter(old.detach().clone(), old.requires_grad))
    return model


def _stack(groups: int = 1, g: int = 5, k: int = 3, seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    ref = Stack(
        [
            BottleNeckReLUKANConv2DLayer(8, 16, 3, g=g, k=k, groups=groups, padding=1),
            BottleNeckReLUKANConv2DLayer(16, 8, 3, g=g, k=k, groups=groups, stride=2),
        ]
    )
    materialized(ref)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained phases: each inner channel's moved its own way
        for layer in ref.layers:
            for phase in (layer.phase_low, layer.phase_high):
                phase.add_(torch.randn(phase.shape, generator=gen) * 0.05)
    return ref.eval()


def _config(groups: int, g: int = 5, k: int = 3) -> dict[str, object]:
    return {
        "g": g,
        "k": k,
        "layers": [{"padding": 1, "groups": groups}, {"stride": 2, "groups": groups}],
    }


def _save(tmp_path: Path, state: dict[str, torch.Tensor], config: dict[str, object]) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _images(seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 8, 9, 9, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("groups", "g", "k"), [(1, 5, 3), (2, 4, 2)])
def test_upstream_checkpoint_loads_and_exports_back(
    tmp_path: Path, groups: int, g: int, k: int
) -> None:
    ref = _stack(groups, g, k)
    state = {key: v.clone() for key, v in ref.state_dict().items()}
    path = _save(tmp_path, state, _config(groups, g, k))
    assert detect_format(path) == FMT
    model = load_model(path)
    assert [type(m).__name__ for m in model.layers] == ["ReLUBottleneckKANConv2d"] * 2
    layer = model.layers[0]
    inner = ref.layers[0].inner_dim
    assert layer.inner_dim == inner and layer.coef_dim == g + k
    assert layer.n_edges == groups * inner * inner * 9
    groups_of_edges, keys = layer.edge_groups()  # trained phases: a group per inner input
    assert len(keys) == inner and groups_of_edges.shape == (layer.n_edges,)
    x = _images()
    assert_same_outputs(ref, model, x, fmt=FMT)
    files = export_model(model, FMT, tmp_path / "out" / "model.safetensors")
    from safetensors.torch import load_file

    back = load_file(str(files[0]))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    config = json.loads((tmp_path / "out" / "config.json").read_text())["layers"][1]
    assert config["layer_class"] == "BottleNeckReLUKANConv2DLayer"
    assert (config["g"], config["k"], config["stride"]) == (g, k, [2, 2])
    again = fresh_outputs(lambda: _stack(groups, g, k, seed=5), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)


def test_untrained_phases_make_one_edge_group(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = Stack([BottleNeckReLUKANConv2DLayer(4, 4, 3, padding=1)]).eval()
    model = load_model(_save(tmp_path, ref.state_dict(), {"padding": 1}))
    layer = model.layers[0]
    groups_of_edges, keys = layer.edge_groups()
    assert len(keys) == 1 and int(groups_of_edges.max()) == 0
    assert layer.edge_functions(torch.ones(2, 8), 9).shape == (2, 9)
    assert_same_outputs(ref, model, torch.randn(2, 4, 6, 6), fmt=FMT)


def test_shapes_that_disagree_are_refused(tmp_path: Path) -> None:
    ref = _stack(groups=2)
    state = dict(ref.state_dict())
    state["layers.1.relukan_conv.1.weight"] = state["layers.1.relukan_conv.1.weight"][:, :-1]
    with pytest.raises(
        FormatError,
        match=r"layers\.1\.relukan_conv\.1\.weight has shape \(4, 31, 3, 3\), expected "
        r"\(4, 32, 3, 3\)",
    ):
        load_model(_save(tmp_path, state, _config(2)))
    state = dict(ref.state_dict())
    state["layers.0.inner_proj.1.weight"] = torch.zeros(4, 3, 1, 1)
    with pytest.raises(FormatError, match=r"layers\.0\.inner_proj\.1\.weight has shape \(4, 3"):
        load_model(_save(tmp_path, state, _config(2)))
    state = dict(ref.state_dict())
    state["layers.0.phase_high"] = state["layers.0.phase_high"][:, :, :-1]
    with pytest.raises(FormatError, match=r"layers\.0\.phase_low \(1, 4, 8, 1, 1\) and phase_high"):
        load_model(_save(tmp_path, state, _config(2)))
    with pytest.raises(FormatError, match=r"layers\.0\.phase_low has 8 phases .* g 5 \+ k 2"):
        load_model(_save(tmp_path, ref.state_dict(), {**_config(2), "k": 2}))
    for bad in ({"g": "5"}, {"g": 0}, {"k": True}, {"g": 10**9}):
        with pytest.raises(FormatError, match=r"config\.json \(layers\.0\.\): g must be"):
            load_model(_save(tmp_path, ref.state_dict(), {**_config(2), **bad}))
    with pytest.raises(FormatError, match=r"layers\.0\.relukan_conv says groups 2, but the config"):
        load_model(_save(tmp_path, ref.state_dict(), {"groups": 1}))


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    def build() -> nn.Module:
        return materialized(
            Stack(
                [
                    BottleNeckReLUKANConv2DLayer(1, 16, 3, padding=1),
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Linear(16, 10),
                ]
            ).eval()
        )

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
