"""torch-conv-kan's WavKANConv2DLayer (Wav-KAN convolutions), written by the upstream class
itself (vendored verbatim in reference/torch_conv_kan_upstream) in its three wav_versions,
imported, exported back with a strict load, refusals, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kan_convs.wav_kan import WavKANConv2DLayer
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model

FMT = "torch-conv-kan"


def _stack(
    wavelet: str = "mexican_hat", version: str = "fast", groups: int = 1, seed: int = 0
) -> Stack:
    torch.manual_seed(seed)
    layers = [
        WavKANConv2DLayer(
            2 * groups,
            2 * groups,
            3,
            groups=groups,
            padding=1,
            wavelet_type=wavelet,
            wav_version=version,
        ),
        WavKANConv2DLayer(
            2 * groups, 4, 3, groups=groups, stride=2, wavelet_type=wavelet, wav_version=version
        ),
    ]
    ref = Stack(layers)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-like: scales, shifts and BatchNorm statistics moved
        for layer in layers:
            for conv in layer.wavelet_conv:
                conv.scale.uniform_(0.5, 1.5, generator=gen)
                conv.translation.normal_(0.0, 0.3, generator=gen)
            for bn in layer.layer_norm:
                bn.weight.uniform_(0.5, 1.5, generator=gen)
                bn.bias.normal_(0.0, 0.2, generator=gen)
                bn.running_mean.normal_(0.0, 0.2, generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)
                bn.num_batches_tracked.fill_(100)
    return ref.eval()


def _save(tmp_path: Path, state: dict[str, torch.Tensor], config: dict[str, object]) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _config(wavelet: str, groups: int) -> dict[str, object]:
    return {
        "wavelet_type": wavelet,
        "layers": [{"padding": 1, "groups": groups}, {"stride": 2, "groups": groups}],
    }


def _images(channels: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(3, channels, 9, 9, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("wavelet", "version", "groups"),
    [
        ("mexican_hat", "fast", 1),
        ("morlet", "fast", 2),
        ("dog", "base", 1),
        ("meyer", "base", 2),
        ("mexican_hat", "fast_plus_one", 2),
    ],
)
def test_upstream_checkpoint_loads_and_exports_back(
    tmp_path: Path, wavelet: str, version: str, groups: int
) -> None:
    ref = _stack(wavelet, version, groups)
    path = _save(tmp_path, ref.state_dict(), _config(wavelet, groups))
    assert detect_format(path) == FMT
    model = load_model(path)
    assert [type(m).__name__ for m in model.layers] == ["WaveletKANConv2d"] * 2
    layer = model.layers[0]
    assert layer.groups == groups and layer.coef_dim == 2 * 9 + 2
    assert layer.n_edges == 2 * groups * 2  # (out, in) pairs: O x I/g
    x = _images(2 * groups)
    assert_same_outputs(ref, model, x, fmt=FMT)
    files = export_model(model, FMT, tmp_path / "out" / "model.safetensors")
    from safetensors.torch import load_file

    back = load_file(str(files[0]))
    config = json.loads((tmp_path / "out" / "config.json").read_text())["layers"][1]
    assert config["layer_class"] == "WavKANConv2DLayer" and config["stride"] == [2, 2]
    if version == "fast":  # the version written back: the same tensors
        state = ref.state_dict()
        assert set(back) == set(state)
        for key, value in state.items():
            assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _stack(wavelet, "fast", groups, seed=7), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)


def test_shapes_that_disagree_are_refused(tmp_path: Path) -> None:
    ref = _stack(groups=2)
    state = dict(ref.state_dict())
    state["layers.1.wavelet_conv.1.translation"] = state["layers.1.wavelet_conv.1.translation"][
        :, :1
    ]
    with pytest.raises(
        FormatError,
        match=r"layers\.1\.wavelet_conv\.1\.translation has shape \(1, 1, 2, 1, 1\), expected "
        r"\(1, 2, 2, 1, 1\)",
    ):
        load_model(_save(tmp_path, state, _config("mexican_hat", 2)))
    state = dict(ref.state_dict())
    state["layers.0.wavelet_conv.0.wavelet_weights.weight"] = torch.zeros(2, 2, 3, 2)
    with pytest.raises(
        FormatError, match=r"layers\.0\.wavelet_conv\.0\.wavelet_weights\.weight has shape"
    ):
        load_model(_save(tmp_path, state, _config("mexican_hat", 2)))
    with pytest.raises(FormatError, match=r"layers\.0\.base_conv has 2 group\(s\), but the config"):
        load_model(_save(tmp_path, ref.state_dict(), {"groups": 1}))
    state = dict(ref.state_dict())
    state["layers.0.wavelet_conv.1.scale"] = torch.zeros_like(
        state["layers.0.wavelet_conv.1.scale"]
    )
    with pytest.raises(FormatError, match=r"layers\.0\.wavelet_conv\.1\.scale has zeros"):
        load_model(_save(tmp_path, state, _config("mexican_hat", 2)))


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    def build() -> nn.Module:
        return Stack(
            [
                WavKANConv2DLayer(1, 4, 3, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 10),
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
