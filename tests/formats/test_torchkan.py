"""torchkan's KAN and KAL_Net (1ssb/torchkan, vendored verbatim: the PyPI wheel is empty),
written by its own classes, imported and exported back with a strict load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from KALnet import KAL_Net
from test_tck_polynomial import fresh_outputs
from torch import nn
from torchkan import KAN

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model


def _model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = KAN([5, 4, 3], grid_size=4) if kind == "KAN" else KAL_Net([5, 4, 3], polynomial_order=3)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-like LayerNorms and PReLUs
        for name, p in model.named_parameters():
            if "layer_norms" in name or "prelus" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


@pytest.mark.parametrize("kind", ["KAN", "KAL_Net"])
def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path, kind: str) -> None:
    ref = _model(kind)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    assert detect_format(tmp_path / "m.pt") == "torchkan"
    model = load_model(tmp_path / "m.pt")
    glue = "PReLU" if kind == "KAN" else "SiLU"
    assert [type(m).__name__ for m in model.layers][1:3] == ["LayerNorm", glue]
    x = torch.rand(16, 5, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
    assert_same_outputs(ref, model, x, fmt="torchkan")
    files = export_model(model, "torchkan", tmp_path / "out.pt")
    back = torch.load(files[0], weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _model(kind, seed=3), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt="torchkan")


def test_poly_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    state = dict(_model("KAL_Net").state_dict())
    state["poly_weights.1"] = state["poly_weights.1"][:, :-1]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(FormatError, match=r"poly_weights\.1 has shape \(3, 15\)"):
        load_model(tmp_path / "m.pt")
