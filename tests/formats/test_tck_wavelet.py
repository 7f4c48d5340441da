"""torch-conv-kan's dense WavKANLayer (Wav-KAN), written by the upstream class itself
(vendored verbatim in reference/torch_conv_kan_upstream), imported, exported back and
compressed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kans.layers import WavKANLayer
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs

from metacluster.errors import FormatError
from metacluster.formats import export_model, load_model

FMT = "torch-conv-kan"


def _stack(wavelet: str, seed: int = 0, widths: tuple[int, ...] = (5, 4, 3)) -> Stack:
    torch.manual_seed(seed)
    layers = [WavKANLayer(a, b, wavelet_type=wavelet) for a, b in itertools.pairwise(widths)]
    ref = Stack(layers)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-like: scales, shifts and BatchNorm statistics moved
        for layer in layers:
            layer.scale.uniform_(0.5, 1.5, generator=gen)
            layer.translation.normal_(0.0, 0.3, generator=gen)
            layer.bn.weight.uniform_(0.5, 1.5, generator=gen)
            layer.bn.bias.normal_(0.0, 0.2, generator=gen)
            layer.bn.running_mean.normal_(0.0, 0.2, generator=gen)
            layer.bn.running_var.uniform_(0.5, 2.0, generator=gen)
            layer.bn.num_batches_tracked.fill_(100)
    return ref.eval()


def _save(tmp_path: Path, state: dict[str, torch.Tensor], wavelet: str | None) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    if wavelet is not None:
        (tmp_path / "config.json").write_text(json.dumps({"wavelet_type": wavelet}))
    return tmp_path


@pytest.mark.parametrize("wavelet", ["mexican_hat", "morlet", "dog", "meyer"])
def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path, wavelet: str) -> None:
    ref = _stack(wavelet)
    model = load_model(_save(tmp_path, ref.state_dict(), wavelet))
    assert model.meta["family"] == "wavelet"
    assert [type(m).__name__ for m in model.layers][:2] == ["WaveletKANLayer", "Affine"]
    assert model.layers[0].coef_dim == 4 and model.layers[0].n_edges == 20
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(ref, model, x, fmt=FMT)
    files = export_model(model, FMT, tmp_path / "out" / "model.safetensors")
    from safetensors.torch import load_file

    back = load_file(str(files[0]))
    assert set(back) == set(ref.state_dict())
    again = fresh_outputs(lambda: _stack(wavelet, seed=7), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["layers"][0] == {
        "layer_class": "WavKANLayer",
        "input_dim": 5,
        "output_dim": 4,
        "wavelet_type": wavelet,
    }


def test_wavelet_defaults_to_mexican_hat_and_a_wrong_one_differs(tmp_path: Path) -> None:
    ref = _stack("mexican_hat")
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))
    assert_same_outputs(ref, load_model(_save(tmp_path, ref.state_dict(), None)), x, fmt=FMT)
    (tmp_path / "config.json").write_text(json.dumps({"wavelet_type": "shannon"}))
    with pytest.raises(FormatError, match=r"layers\.0\.: wavelet_type 'shannon'"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("leaf", "value", "message"),
    [
        ("translation", torch.zeros(4, 3), r"layers\.0\.translation has shape \(4, 3\)"),
        ("scale", torch.zeros(4, 5), r"layers\.0\.scale has zeros"),
    ],
)
def test_bad_tensors_are_refused(
    tmp_path: Path, leaf: str, value: torch.Tensor, message: str
) -> None:
    state = dict(_stack("dog").state_dict())
    state[f"layers.0.{leaf}"] = value
    with pytest.raises(FormatError, match=message):
        load_model(_save(tmp_path, state, "dog"))


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    compress_and_reload(tmp_path, lambda: _stack("mexican_hat", widths=(64, 8, 10)), spec=None)
