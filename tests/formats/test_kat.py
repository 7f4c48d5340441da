"""KAT's GR-KAN blocks (rational activations shared by channel groups + linear layers):
import, export back with a strict load, the pole check, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from reference.kat_rational import KATBlock
from test_tck_polynomial import compress_and_reload, fresh_outputs

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model


def _block(
    seed: int = 0, abs_powers: bool = False, widths: tuple[int, int, int] = (16, 24, 8)
) -> KATBlock:
    torch.manual_seed(seed)
    block = KATBlock(*widths, abs_powers=abs_powers)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-like rationals: moved a little from their init
        for act in (block.act1, block.act2):
            act.weight_numerator.add_(torch.randn(act.weight_numerator.shape, generator=gen) * 0.05)
            act.weight_denominator.add_(
                torch.randn(act.weight_denominator.shape, generator=gen) * 0.02
            )
            if not abs_powers:  # even powers only: the fallback's Q has no real zero
                act.weight_denominator[:, 0::2] = 0.0
    return block.eval()


def _inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(32, 16, generator=torch.Generator().manual_seed(seed))


def _save(tmp_path: Path, block: KATBlock, config: dict[str, object] | None) -> Path:
    torch.save(block.state_dict(), tmp_path / "pytorch_model.bin")
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("abs_powers", [False, True])
def test_block_loads_and_exports_back(tmp_path: Path, abs_powers: bool) -> None:
    ref = _block(abs_powers=abs_powers)
    config = None if abs_powers else {"denominator": "signed"}
    path = _save(tmp_path, ref, config)
    assert detect_format(path) == "kat"
    model = load_model(path)
    assert [type(m).__name__ for m in model.layers] == ["GroupRationalKANLayer"] * 2
    layer = model.layers[1]
    assert layer.n_edges == 8 * 24 and layer.coef_dim == 1 and layer.num_groups == 8
    assert_same_outputs(ref, model, _inputs(), fmt="kat")
    files = export_model(model, "kat", tmp_path / "out.pt")
    back = torch.load(files[0], weights_only=True)
    assert set(back) == set(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _block(seed=4, abs_powers=abs_powers), back, _inputs(2))
    assert_same_outputs(lambda _: again, model, _inputs(2), fmt="kat")


def test_a_pole_in_the_data_range_is_refused_at_import(tmp_path: Path) -> None:
    ref = _block()
    with torch.no_grad():  # group 3 of act2: Q(x) = 1 + 0.5 x, zero at x = -2
        ref.act2.weight_denominator[3] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    path = _save(tmp_path, ref, {"denominator": "signed"})
    with pytest.raises(
        FormatError, match=r"act2\.weight_denominator: group 3's denominator is 0 at x = -2,"
    ):
        load_model(path)
    # outside the declared data range it is allowed, and the kernel's |x| form has no pole
    (tmp_path / "config.json").write_text(
        json.dumps({"denominator": "signed", "input_range": [-1.5, 9]})
    )
    load_model(path)
    (tmp_path / "config.json").write_text(json.dumps({"denominator": "abs"}))
    load_model(path)


def test_groups_that_do_not_divide_the_inputs_are_refused(tmp_path: Path) -> None:
    state = dict(_block().state_dict())
    state["act1.weight_denominator"] = state["act1.weight_denominator"][:3]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(
        FormatError,
        match=r"act1\.weight_numerator \(1, 6\) and weight_denominator \(3, 4\) do not fit fc1\.weight",
    ):
        load_model(tmp_path / "m.pt")


def test_compresses_through_the_engine(tmp_path: Path) -> None:
    compress_and_reload(tmp_path, lambda: _block(abs_powers=True, widths=(64, 16, 10)), None, "kat")
