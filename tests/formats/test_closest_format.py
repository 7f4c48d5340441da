"""`metacluster inspect` on an unknown layout names the closest known format and the key
or shape that did not match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from reference.fastkan import FastKAN

from metacluster.cli import cli


def _inspect(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    return result.exit_code, result.output


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    state = FastKAN([4, 3]).state_dict()
    del state["layers.0.rbf.grid"]  # FastKAN without its RBF centres
    torch.save(state, tmp_path / "m.pt")
    code, output = _inspect(tmp_path / "m.pt")
    assert code != 0 and output.startswith("error: ") and output.count("\n") == 1
    assert "closest known format: fastkan (no key ending in 'rbf.grid')" in output


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            {
                "layers.0.poly_weights": torch.zeros(2, 3, 8, 3),
                "layers.0.base_conv.0.weight": torch.zeros(3, 2, 3, 3),
            },
            "closest known format: torch-conv-kan ('poly_weights' has shape (2, 3, 8, 3), expected 5 dimensions)",
        ),
        (
            {
                "layers.0.grams_basis_weights": torch.zeros(4, 3, 4),
                "layers.0.norm.weight": torch.ones(3),
            },
            "closest known format: torch-conv-kan (no key ending in 'base_weights')",
        ),
        (  # a PadeRKAN without its denominator
            {
                "0.weight": torch.zeros(4, 3),
                "1.w_p": torch.ones(3),
                "1.zeta_p": torch.zeros(1),
                "2.weight": torch.zeros(2, 4),
            },
            "closest known format: rkan (no key ending in 'w_q'; no key ending in 'zeta_q')",
        ),
        (  # a WavKAN conv without its base conv
            {
                "layers.0.wavelet_conv.0.scale": torch.ones(1, 2, 2, 1, 1),
                "layers.0.wavelet_conv.0.translation": torch.zeros(1, 2, 2, 1, 1),
            },
            "closest known format: torch-conv-kan (no key ending in 'base_conv.0.weight')",
        ),
    ],
)
def test_a_wrong_shape_or_missing_partner_is_named(
    tmp_path: Path, state: dict[str, torch.Tensor], expected: str
) -> None:
    torch.save(state, tmp_path / "m.pt")
    code, output = _inspect(tmp_path / "m.pt")
    assert code != 0 and expected in output, output


def test_nothing_in_common_names_no_format(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "m.pt")
    code, output = _inspect(tmp_path / "m.pt")
    assert code != 0 and "matches no supported KAN layout" in output
    assert "closest" not in output
