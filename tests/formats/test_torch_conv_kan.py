"""torch-conv-kan KANConv2DLayer stacks: state dict and model.safetensors + config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from reference.torch_conv_kan import ConvKANStack, MixedStack
from safetensors.torch import save_file

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, inspect_model, load_model


def _images(seed: int = 0, c: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, c, 7, 7, generator=gen) * 2.4 - 1.2


def _trained_like(**kw: object) -> ConvKANStack:
    torch.manual_seed(0)
    ref = ConvKANStack([2, 4, 4], kernel_size=3, **kw)
    with torch.no_grad():
        for layer in ref.layers:
            for p in layer.prelus:
                p.weight.fill_(0.1)
    return ref.eval()


def test_state_dict_with_groups(tmp_path: Path) -> None:
    ref = _trained_like(groups=2)
    torch.save(ref.state_dict(), tmp_path / "conv.pt")
    assert detect_format(tmp_path / "conv.pt") == "torch-conv-kan"
    model = load_model(tmp_path / "conv.pt")
    layer = model.layers[0]
    assert layer.n_edges == 4 * 1 * 3 * 3  # O * I/g * kh * kw
    assert_same_outputs(ref, model, _images(), fmt="torch-conv-kan")


def test_hf_folder_with_config(tmp_path: Path) -> None:
    cfg = {"spline_order": 2, "grid_size": 4, "padding": 1, "grid_range": [-1.5, 1.5]}
    ref = _trained_like(**cfg)
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        str(tmp_path / "model.safetensors"),
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = load_model(tmp_path)  # the folder
    assert model.layers[0].spline_order == 2 and model.layers[0].grid_size == 4
    assert_same_outputs(ref, model, _images(), fmt="torch-conv-kan")
    info = inspect_model(tmp_path / "model.safetensors")
    files = ("model.safetensors", "config.json")
    assert info["bytes"] == sum((tmp_path / f).stat().st_size for f in files)
    assert info["params"] == sum(p.numel() for p in ref.parameters())
    assert info["layers"][1] == {"name": "layers.1", "in": 4, "out": 4, "edges": 144, "coef_dim": 7}


def test_wrong_spline_order_in_config_is_an_error(tmp_path: Path) -> None:
    ref = _trained_like(grid_size=2, spline_order=1)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"spline_order": 5}))
    with pytest.raises(FormatError, match="spline_order 5"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["conv.pt", "model.safetensors"])
def test_export_loads_in_reference(tmp_path: Path, name: str) -> None:
    ref = _trained_like(padding=1, groups=2)
    src = tmp_path / "src"
    src.mkdir()
    torch.save(ref.state_dict(), src / "pytorch_model.bin")
    (src / "config.json").write_text(json.dumps({"padding": 1}))
    model = load_model(src)
    out_dir = tmp_path / "out"
    files = export_model(model, "torch-conv-kan", out_dir / name)
    fresh = ConvKANStack([2, 4, 4], kernel_size=3, padding=1, groups=2).eval()
    reloaded = load_model(files[0])
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        fresh.load_state_dict(load_file(str(files[0])), strict=True)
        assert json.loads((out_dir / "config.json").read_text())["layers"][0]["padding"] == [1, 1]
    else:
        fresh.load_state_dict(torch.load(files[0], weights_only=True), strict=True)
    assert_same_outputs(ref, fresh, _images(1), fmt="torch-conv-kan")
    assert_same_outputs(ref, model, _images(1), fmt="torch-conv-kan")
    if name.endswith(".safetensors"):  # config.json travels with it, so padding survives
        assert_same_outputs(ref, reloaded, _images(1), fmt="torch-conv-kan")


def test_kacn_chebyshev_conv_layers(tmp_path: Path) -> None:
    torch.manual_seed(5)
    ref = MixedStack().eval()
    with torch.no_grad():
        for conv in ref.layers[0].poly_conv:
            conv.weight.normal_(0.0, 0.3)
    torch.save(ref.state_dict(), tmp_path / "mixed.pt")
    model = load_model(tmp_path / "mixed.pt", format="torch-conv-kan")
    assert [type(m).__name__ for m in model.layers] == ["ChebyKANConv2d", "KANConv2d"]
    assert model.layers[0].coef_dim == 4 and model.layers[0].n_edges == 4 * 1 * 9
    # padding is not in a state dict: the first layer needs it from a config
    cfg = {"layers": [{"padding": 1}, {}]}
    src = tmp_path / "hf"
    src.mkdir()
    torch.save(ref.state_dict(), src / "pytorch_model.bin")
    (src / "config.json").write_text(json.dumps(cfg))
    model = load_model(src)
    assert_same_outputs(ref, model, _images(2), fmt="torch-conv-kan")
    out = export_model(model, "torch-conv-kan", tmp_path / "out" / "model.safetensors")
    fresh = MixedStack().eval()
    from safetensors.torch import load_file

    fresh.load_state_dict(load_file(str(out[0])), strict=True)
    assert_same_outputs(ref, fresh, _images(3), fmt="torch-conv-kan")
    assert_same_outputs(ref, load_model(tmp_path / "out"), _images(3), fmt="torch-conv-kan")


@pytest.mark.parametrize("groups", [1, 2])
def test_weights_are_imported_and_exported_exactly(tmp_path: Path, groups: int) -> None:
    """Tensors, not outputs: every torch-conv-kan layer ends in an InstanceNorm, which
    cancels a common scale of its inputs, so outputs alone cannot see an importer that
    scales the coefficients. Each spline and base weight must be the layer's own
    coefficient, bit for bit, and survive the export unchanged."""
    ref = _trained_like(groups=groups)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(sd, tmp_path / "conv.pt")
    model = load_model(tmp_path / "conv.pt")
    for pos, layer in enumerate(model.layers):
        out_g = layer.out_channels // groups
        in_g = layer.in_channels // groups
        n_basis = layer.n_basis
        kh, kw = layer.kernel_size
        coef = layer.coef.detach()  # (O, I/g, kh, kw, G+k+1)
        for g in range(groups):
            block = coef[g * out_g : (g + 1) * out_g]
            spline = sd[f"layers.{pos}.spline_conv.{g}.weight"].reshape(
                out_g, in_g, n_basis, kh, kw
            )
            assert torch.equal(block[..., :n_basis], spline.permute(0, 1, 3, 4, 2))
            assert torch.equal(block[..., -1], sd[f"layers.{pos}.base_conv.{g}.weight"])
    exported = export_model(model, "torch-conv-kan", tmp_path / "out.pt")
    back = torch.load(exported[0], weights_only=True)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key
