"""Configs read from a checkpoint are checked against its tensors before anything is built.

Every importer that takes sizes from text (our safetensors metadata, a spec, a
torch-conv-kan config.json, a pykan YAML) refuses a config that would allocate more
than its tensors hold, or that is out of sane bounds, with a FormatError, and never
allocates first: no allocation larger than the file's
own tensors may happen before the refusal (see REFUSED_UNBUILT).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from reference.torch_conv_kan import ConvKANStack
from safetensors.torch import save_file

from metacluster.errors import FormatError
from metacluster.formats import load_model
from metacluster.formats._yaml import load_pykan_config
from metacluster.kan import build_kan

# The wording of `build_bounded`'s refusal: the dry build on the meta device found the
# config too big or not fitting, so nothing was built (an allocation that went ahead
# would fail differently, or not at all). Memory itself is measured on a real API
# process in tests/integration/test_bounded_resources.py.
REFUSED_UNBUILT = r"config asks for \d+ values|config does not fit the tensors"


def _native(tmp_path: Path, mutate: Any) -> Path:
    model = build_kan("bspline", [2, 2])
    config = model.config()
    mutate(config)
    path = tmp_path / "evil.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path),
        {"format": "metacluster", "format_version": "1", "config": json.dumps(config)},
    )
    return path


def test_native_grid_size_of_ten_million_is_refused_unbuilt(tmp_path: Path) -> None:
    path = _native(tmp_path, lambda c: c["layers"][0].update(grid_size=10_000_000))
    assert path.stat().st_size < 2000
    with pytest.raises(FormatError, match=REFUSED_UNBUILT):
        load_model(path)


@pytest.mark.parametrize(
    "change",
    [
        {"in_features": 100_000, "out_features": 100_000},
        {"spline_order": 500},
        {"in_features": 3},
    ],
)
def test_native_configs_that_do_not_fit_their_tensors(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    path = _native(tmp_path, lambda c: c["layers"][0].update(change))
    with pytest.raises(FormatError, match=REFUSED_UNBUILT):
        load_model(path)


def test_native_extra_layers_without_tensors_are_refused(tmp_path: Path) -> None:
    def add_linear(config: dict[str, Any]) -> None:
        config["layers"].append({"type": "linear", "in_features": 50_000, "out_features": 50_000})

    with pytest.raises(FormatError, match=REFUSED_UNBUILT):
        load_model(_native(tmp_path, add_linear))


def test_spec_glue_options_cannot_allocate(tmp_path: Path) -> None:
    from reference.efficient_kan import KAN

    torch.manual_seed(0)
    sd = {f"head.{k}": v for k, v in KAN([3, 2]).state_dict().items()}
    torch.save(sd, tmp_path / "m.pt")
    spec = {
        "layers": [
            {"kind": "efficient-kan", "prefix": "head."},
            {"kind": "linear", "options": {"in_features": 100_000, "out_features": 100_000}},
        ]
    }
    with pytest.raises(FormatError, match=r"spec layer 1 \(linear\): its config asks for"):
        load_model(tmp_path / "m.pt", spec=spec)


def _conv_checkpoint(tmp_path: Path, config: dict[str, Any]) -> Path:
    torch.manual_seed(0)
    ref = ConvKANStack([2, 3], kernel_size=3)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, str(folder / "model.safetensors")
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"spline_order": 10_000_000}, "spline_order must be an integer in 0..16"),
        ({"spline_order": -5}, "spline_order"),
        ({"padding": 10_000_000}, "padding must be an integer in 0..256"),
        ({"stride": 0}, "stride"),
        ({"dilation": [1, 10**9]}, "dilation"),
        ({"grid_range": [1.0, -1.0]}, "grid_range"),
        ({"grid_range": [0, float("inf")]}, "grid_range"),
        ({"grid_range": list(range(10**5))}, "grid_range"),
        ({"dropout": 2.0}, "dropout"),
        ({"layers": [{"spline_order": 10**9}]}, "spline_order"),
    ],
)
def test_torch_conv_kan_config_json_is_bounded(
    tmp_path: Path, config: dict[str, Any], needle: str
) -> None:
    with pytest.raises(FormatError, match=needle):
        load_model(_conv_checkpoint(tmp_path, config))


def test_pykan_yaml_alias_bomb_is_refused_before_construction() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        prev = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([prev] * 10)}]")
    lines.append("width: *a8")
    with pytest.raises(FormatError, match="expands to more than"):
        load_pykan_config("\n".join(lines), "bomb_config.yml")


def test_pykan_yaml_nesting_is_bounded() -> None:
    text = "width: " + "[" * 200 + "]" * 200
    with pytest.raises(FormatError, match="nests deeper"):
        load_pykan_config(text, "deep_config.yml")


def test_pykan_yaml_with_shared_anchors_still_loads() -> None:
    # saveckpt writes repeated numpy dtypes as anchors; small expansions are fine
    cfg = load_pykan_config("base: &b [1, 2]\nwidth: [*b, *b]\ngrid: 3\n")
    assert cfg["width"] == [[1, 2], [1, 2]]


def test_pykan_grid_range_must_be_two_finite_numbers(tmp_path: Path) -> None:
    import contextlib

    import kan

    with open(tmp_path / "log", "w") as sink, contextlib.redirect_stdout(sink):
        model = kan.KAN(width=[2, 2], grid=3, k=3, seed=0, auto_save=False, ckpt_path=str(tmp_path))
        model.saveckpt(str(tmp_path / "m"))
    cfg_file = tmp_path / "m_config.yml"
    text = cfg_file.read_text()
    assert "grid_range" in text
    import yaml

    data = yaml.safe_load(text)
    data["grid_range"] = [0.0, float("nan")]
    cfg_file.write_text(yaml.safe_dump(data))
    with pytest.raises(FormatError, match="grid_range"):
        load_model(tmp_path / "m")


def test_a_deflated_torch_zip_bomb_is_refused_before_loading(tmp_path: Path) -> None:
    """torch.load inflates deflated zip members: 5 KB could become gigabytes."""
    import io
    import zipfile

    from reference.efficient_kan import KAN

    buf = io.BytesIO()
    sd = KAN([3, 2]).state_dict()
    sd["layers.0.padding"] = torch.zeros(8_000_000)  # 32 MB of zeros: deflates to ~30 KB
    torch.save(sd, buf)
    plain = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as out:
        for info in plain.infolist():
            out.writestr(info.filename, plain.read(info.filename))
    assert (tmp_path / "bomb.pt").stat().st_size < 200_000
    with pytest.raises(FormatError, match="expands to"):
        load_model(tmp_path / "bomb.pt")
    # an ordinary (stored) torch.save checkpoint is unaffected
    torch.save(KAN([3, 2]).state_dict(), tmp_path / "ok.pt")
    assert load_model(tmp_path / "ok.pt").n_params() > 0
