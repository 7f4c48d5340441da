"""Our safetensors format (round trips, dtypes, corrupt files) and JSON specs for wrappers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs, inputs
from reference.chebykan import ChebyKANLayer as RefCheby
from reference.efficient_kan import KANLinear
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import (
    FORMATS,
    detect_format,
    fp32_checkpoint_bytes,
    inspect_model,
    load_model,
    save_model,
)
from metacluster.kan import build_kan


def test_formats_list() -> None:
    assert set(FORMATS) == {
        "metacluster",
        "efficient-kan",
        "pykan",
        "fastkan",
        "chebykan",
        "fourierkan",
        "torch-conv-kan",
        "flashkan",
        "inkan",
        "kat",
        "convkan",
        "torchkan",
        "rkan",
        "kaconv",
        "spec",
    }


@pytest.mark.parametrize("family", ["bspline", "pykan_bspline", "rbf", "chebyshev", "fourier"])
def test_round_trip_is_exact(tmp_path: Path, family: str) -> None:
    torch.manual_seed(0)
    model = build_kan(family, [3, 4, 2]).eval()
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    assert detect_format(path) == "metacluster"
    again = load_model(path)
    assert again.config() == model.config()
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    x = inputs(16, 3)
    assert torch.equal(model(x), again(x))


def test_float64_is_kept_and_metadata_is_json(tmp_path: Path) -> None:
    model = build_kan("bspline", [2, 2]).to(torch.float64)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    with safe_open(str(path), framework="pt") as fh:  # type: ignore[no-untyped-call]
        meta = fh.metadata()
    assert meta["format"] == "metacluster"
    assert json.loads(meta["config"])["layers"][0]["type"] == "bspline"
    again = load_model(path)
    assert again.layers[0].coef.dtype == torch.float64
    x = inputs(8, 2, dtype=torch.float64)
    assert torch.equal(model(x), again(x))


def test_conv_model_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_kan("conv_bspline", [8, 4], input_shape=[1, 8, 8], channels=[2]).eval()
    save_model(model, tmp_path / "c.safetensors")
    again = load_model(tmp_path / "c.safetensors")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(x), again(x))


def test_inspect_and_fp32_bytes(tmp_path: Path) -> None:
    model = build_kan("chebyshev", [5, 3, 2])
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    info = inspect_model(path)
    assert info["format"] == "metacluster" and info["family"] == "chebyshev"
    assert info["edges"] == 5 * 3 + 3 * 2
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["bytes"] == path.stat().st_size == fp32_checkpoint_bytes(model)
    # a fp64 model's fp32 baseline is about half its own file
    save_model(model.to(torch.float64), tmp_path / "m64.safetensors")
    assert fp32_checkpoint_bytes(model) < (tmp_path / "m64.safetensors").stat().st_size


def test_tampered_files_are_format_errors(tmp_path: Path) -> None:
    model = build_kan("bspline", [2, 3])
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    cfg = json.dumps(model.config())
    save_file(
        sd,
        str(tmp_path / "v.safetensors"),
        {"format": "metacluster", "format_version": "9", "config": cfg},
    )
    with pytest.raises(FormatError, match="version"):
        load_model(tmp_path / "v.safetensors")
    bad = dict(sd)
    bad["layers.0.coef"] = torch.zeros(1, 1, 1)
    save_file(
        bad,
        str(tmp_path / "w.safetensors"),
        {"format": "metacluster", "format_version": "1", "config": cfg},
    )
    with pytest.raises(
        FormatError, match=r"does not fit the tensors \(layers.0.coef is \(1, 1, 1\)"
    ):
        load_model(tmp_path / "w.safetensors")
    save_file(
        sd,
        str(tmp_path / "c.safetensors"),
        {"format": "metacluster", "format_version": "1", "config": "{"},
    )
    with pytest.raises(FormatError, match="invalid model config"):
        load_model(tmp_path / "c.safetensors")
    (tmp_path / "t.safetensors").write_bytes((tmp_path / "v.safetensors").read_bytes()[:60])
    with pytest.raises(FormatError):
        load_model(tmp_path / "t.safetensors")


# -- spec -----------------------------------------------------------------------
class _Wrapper(nn.Module):
    """A user's own model: flatten, an efficient-kan layer, a LayerNorm, a Cheby head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.encoder = nn.ModuleDict({"kan": KANLinear(6, 4), "norm": nn.LayerNorm(4)})
        self.head = RefCheby(4, 3, 3)
        self.classifier = nn.Linear(3, 2)
        self.aux = nn.Linear(4, 1)  # training-only head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = self.encoder["norm"](self.encoder["kan"](x))
        return self.classifier(self.head(x))  # type: ignore[no-any-return]


SPEC = {
    "layers": [
        {"kind": "flatten"},
        {"kind": "efficient-kan", "prefix": "encoder.kan."},
        {"kind": "layernorm", "prefix": "encoder.norm."},
        {"kind": "chebykan", "prefix": "head."},
        {"kind": "linear", "prefix": "classifier."},
    ],
    "ignore": ["aux."],
}


def test_spec_given_or_beside_the_checkpoint(tmp_path: Path) -> None:
    ref = _Wrapper().eval()
    with torch.no_grad():
        norm = ref.encoder["norm"]
        assert isinstance(norm, nn.LayerNorm)
        norm.weight.uniform_(0.5, 1.5)
    path = tmp_path / "wrapper.pt"
    torch.save(ref.state_dict(), path)
    x = inputs(20, 6).reshape(20, 2, 3)
    model = load_model(path, spec=SPEC)
    assert_same_outputs(ref, model, x, fmt="spec")
    (tmp_path / "wrapper.pt.spec.json").write_text(json.dumps(SPEC))
    assert detect_format(path) == "spec"
    assert_same_outputs(ref, load_model(path), x, fmt="spec")
    (tmp_path / "wrapper.pt.spec.json").rename(tmp_path / "spec.json")
    assert_same_outputs(ref, load_model(path), x, fmt="spec")
    info = inspect_model(path)
    assert info["bytes"] == path.stat().st_size + (tmp_path / "spec.json").stat().st_size
    assert info["family"] == "bspline+chebyshev"
    assert [ly["name"] for ly in info["layers"]] == ["layers.1", "layers.3"]
    learned = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("aux."))
    assert info["params"] == learned


def test_spec_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "wrapper.pt"
    torch.save(_Wrapper().state_dict(), path)
    no_ignore = {"layers": SPEC["layers"]}
    with pytest.raises(FormatError, match=r"unused \(aux\.weight"):
        load_model(path, spec=no_ignore)
    with pytest.raises(FormatError, match="unknown kind 'mlp'"):
        load_model(path, spec={"layers": [{"kind": "mlp"}]})
    with pytest.raises(FormatError, match=r"no tensors under prefix 'decoder\.'"):
        load_model(path, spec={"layers": [{"kind": "chebykan", "prefix": "decoder."}]})
    with pytest.raises(FormatError, match="non-empty 'layers'"):
        load_model(path, spec={"layers": []})
