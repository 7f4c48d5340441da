"""convkan 0.0.1.2 ConvKAN stacks, written by the package's own classes (vendored verbatim
in reference/convkan_upstream: it needs torchvision, which would replace this torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from convkan import ConvKAN
from formats_helpers import assert_same_outputs
from test_tck_polynomial import Stack, fresh_outputs

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model

CONFIG = {"layers": [{"kernel_size": 3, "padding": 1}, {"kernel_size": [2, 3], "stride": 2}]}


def _stack(seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    layers = [
        ConvKAN(4, 6, 3, padding=1, groups=2, grid_size=4, grid_range=(-1.5, 1.5)),
        ConvKAN(6, 2, (2, 3), stride=2, spline_order=2),
    ]
    ref = Stack(layers)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return ref.eval()


def _images(seed: int) -> torch.Tensor:
    return torch.rand(3, 4, 7, 7, generator=torch.Generator().manual_seed(seed)) * 3.2 - 1.6


def _save(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path) -> None:
    ref = _stack()
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    path = _save(tmp_path, state)
    assert detect_format(path) == "convkan"
    model = load_model(path)
    first, second = model.layers
    assert (first.groups, first.grid_size, first.spline_order) == (2, 4, 3)
    assert second.kernel_size == (2, 3) and second.spline_order == 2
    assert first.n_edges == 6 * 2 * 3 * 3
    assert_same_outputs(ref, model, _images(1), fmt="convkan")
    files = export_model(model, "convkan", tmp_path / "out" / "pytorch_model.bin")
    back = torch.load(files[0], weights_only=True)
    assert set(back) == set(state)
    again = fresh_outputs(lambda: _stack(seed=5), back, _images(2))
    assert_same_outputs(lambda _: again, model, _images(2), fmt="convkan")
    assert_same_outputs(ref, load_model(tmp_path / "out"), _images(2), fmt="convkan")


def test_a_kernel_that_does_not_fit_the_inputs_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, _stack().state_dict())
    (path / "config.json").write_text(json.dumps({"kernel_size": 4}))
    with pytest.raises(
        FormatError,
        match=r"layers\.0\.kan_layer\.spline_weight has 18 inputs per group, not a multiple of the kernel's 4x4",
    ):
        load_model(path)


def test_per_input_grids_are_refused(tmp_path: Path) -> None:
    state = dict(_stack().state_dict())
    state["layers.1.kan_layer.grid"][0, 0] += 0.01
    with pytest.raises(FormatError, match=r"layers\.1\.kan_layer\.grid differs between inputs"):
        load_model(_save(tmp_path, state))
