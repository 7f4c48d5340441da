"""source_checkpoint_bytes: the size of the source checkpoint a compression ratio is measured against.

It counts the checkpoint's own files in the source library's layout, as
`metacluster inspect` does; pykan's `_cache_data` is not part of the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metacluster import formats
from metacluster.formats import export_model
from metacluster.formats import source_checkpoint_bytes as source_bytes
from metacluster.kan import build_kan
from metacluster.kan.model import KANModel


def test_pykan_source_counts_config_and_state_not_cache_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sizes of the files source_bytes' own export writes, taken while they exist
    # (the config names its folder, so a re-export elsewhere differs in size).
    seen: dict[str, int] = {}

    def spy(model: KANModel, to: str, path: str | Path) -> list[Path]:
        written = export_model(model, to, path)
        seen.update({p.name: p.stat().st_size for p in written})
        return written

    monkeypatch.setattr(formats, "export_model", spy)
    torch.manual_seed(0)
    model = build_kan("pykan_bspline", [4, 3, 2]).double()  # pykan uploads are float64
    model.meta["format"] = "pykan"
    size, how = source_bytes(model)
    assert how == "export:pykan"
    assert set(seen) == {"model_config.yml", "model_state", "model_cache_data"}
    assert seen["model_cache_data"] > 0
    assert size == seen["model_config.yml"] + seen["model_state"]


def test_single_file_source_is_that_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_kan("bspline", [4, 3, 2])
    model.meta["format"] = "efficient-kan"
    size, how = source_bytes(model)
    assert how == "export:efficient-kan"
    (path,) = export_model(model, "efficient-kan", tmp_path / "model")
    assert size == path.stat().st_size
