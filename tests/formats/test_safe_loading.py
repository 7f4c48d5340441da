"""Safe loading: pickled modules and malicious pickles are refused, never executed.

Also the pykan YAML loader: numpy tags become numbers, any other python tag fails.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from metacluster.errors import FormatError, UnsafeCheckpointError
from metacluster.formats import load_model
from metacluster.formats._io import read_tensor_file
from metacluster.formats._yaml import load_pykan_config


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickled_whole_module_is_refused_with_state_dict_hint(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_TinyNet(), path)
    with pytest.raises(UnsafeCheckpointError, match=r"state_dict\(\)") as info:
        read_tensor_file(path)
    assert info.value.code == "unsafe_checkpoint"


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_malicious_reduce_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"layers.0.base_weight": torch.zeros(2, 2), "x": _Payload(marker)}
    if writer == "pickle":
        with path.open("wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    else:
        torch.save(payload, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_tensor_file(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_legacy_torch_save_of_a_module_is_unsafe(tmp_path: Path) -> None:
    # the pre-zip torch format: several pickles in a row, the object in the fourth
    path = tmp_path / "legacy.pt"
    torch.save(_TinyNet(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_tensor_file(path)
    assert info.value.code == "unsafe_checkpoint"
    state = tmp_path / "legacy_state.pt"
    torch.save(_TinyNet().state_dict(), state, _use_new_zipfile_serialization=False)
    assert list(read_tensor_file(state)[0]) == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(0).bytes(4096),
        np.random.default_rng(1).bytes(100),
        b"not a checkpoint at all",
        b"PK\x03\x04 a truncated zip",
    ],
    ids=["random-4k", "random-100", "text", "zip-magic"],
)
def test_bytes_that_are_no_pickle_are_not_unsafe(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        read_tensor_file(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert info.value.code == "unsupported_format"
    assert "model.pt is not a" in str(info.value) and "checkpoint" in str(info.value)
    assert "\n" not in str(info.value)


def test_random_bytes_are_named_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FormatError, match=r"^noise\.pt is not a readable model checkpoint: 4096 "):
        read_tensor_file(path)


def test_plain_pickle_without_classes_is_a_format_error(tmp_path: Path) -> None:
    # a well-formed pickle that needs no class, but is no torch checkpoint
    path = tmp_path / "data.pt"
    with path.open("wb") as fh:
        pickle.dump({"a": [1, 2]}, fh, protocol=0)
    with pytest.raises(FormatError) as info:
        read_tensor_file(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert info.value.code == "unsupported_format"


def test_state_dict_wrapped_in_training_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    sd = _TinyNet().state_dict()
    torch.save({"epoch": 3, "state_dict": sd}, path)
    tensors, meta = read_tensor_file(path)
    assert list(tensors) == ["fc.weight", "fc.bias"]
    assert torch.equal(tensors["fc.weight"], sd["fc.weight"])
    assert meta == {}


def test_garbage_and_missing_files_are_format_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FormatError):
        read_tensor_file(junk)
    with pytest.raises(FormatError, match="no such"):
        read_tensor_file(tmp_path / "missing.pt")
    with pytest.raises(FormatError, match="not a state dict"):
        torch.save([torch.zeros(1)], tmp_path / "list.pt")
        read_tensor_file(tmp_path / "list.pt")


def test_pykan_yaml_numpy_tags_become_numbers() -> None:
    text = yaml.dump(
        {
            "grid": np.int64(7),
            "eps": np.float64(0.25),
            "grid_range": np.array([-1.5, 1.5]),
            "m": np.array([[1, 2], [3, 4]], dtype=np.int32),
            "width": [[np.int64(2), 0], [3, 0]],
        }
    )
    assert "!!python/object/apply:numpy" in text
    cfg = load_pykan_config(text)
    assert cfg == {
        "grid": 7,
        "eps": 0.25,
        "grid_range": [-1.5, 1.5],
        "m": [[1, 2], [3, 4]],
        "width": [[2, 0], [3, 0]],
    }
    assert type(cfg["grid"]) is int


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['touch {marker}']",
        "a: !!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "a: !!python/name:os.system ''",
    ],
)
def test_pykan_yaml_other_python_tags_are_refused(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(FormatError) as info:
        load_pykan_config(text.format(marker=marker))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_pykan_yaml_refuses_object_dtype() -> None:
    text = yaml.dump({"a": np.array([1, 2], dtype=object)})
    with pytest.raises(FormatError):
        load_pykan_config(text)


def _corruptions() -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Valid-looking key sets with inconsistent shapes or values, one per importer."""
    torch.manual_seed(0)
    g = 5 + 2 * 3 + 1
    eff = {
        "layers.0.base_weight": torch.randn(2, 3),
        "layers.0.spline_weight": torch.randn(2, 3, 8),
        "layers.0.grid": torch.linspace(-1, 1, g).expand(3, -1).contiguous(),
    }
    cases = [
        ("grid too short", {**eff, "layers.0.grid": torch.zeros(3, 4)}),
        ("base of wrong shape", {**eff, "layers.0.base_weight": torch.randn(3, 3)}),
        (
            "knots decreasing",
            {**eff, "layers.0.grid": torch.linspace(1, -1, g).expand(3, -1).contiguous()},
        ),
        ("scaler of wrong shape", {**eff, "layers.0.spline_scaler": torch.randn(5)}),
        (
            "pykan coef vs grid",
            {
                "act_fun.0.coef": torch.randn(2, 3, 8),
                "act_fun.0.grid": torch.randn(2, 5),
                "node_scale_0": torch.ones(3),
            },
        ),
        (
            "fastkan width",
            {
                "layers.0.spline_linear.weight": torch.randn(2, 7),
                "layers.0.rbf.grid": torch.linspace(-2, 2, 8),
                "layers.0.layernorm.weight": torch.ones(3),
                "layers.0.layernorm.bias": torch.zeros(3),
            },
        ),
        ("fourier halves", {"layers.0.fouriercoeffs": torch.randn(3, 2, 2, 4)}),
        ("cheby rank", {"layers.0.cheby_coeffs": torch.randn(3, 4)}),
        (
            "conv groups",
            {
                "spline_conv.0.weight": torch.randn(2, 16, 3, 3),
                "base_conv.0.weight": torch.randn(2, 3, 3, 3),
            },
        ),
    ]
    return cases


@pytest.mark.parametrize(("name", "state"), _corruptions(), ids=[c[0] for c in _corruptions()])
def test_inconsistent_checkpoints_raise_format_errors(
    tmp_path: Path, name: str, state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(FormatError) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_text_file_error_names_the_failure_kind(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello\n")
    with pytest.raises(FormatError) as info:
        load_model(path, format="efficient-kan")
    message = str(info.value)
    assert message.startswith("notes.pt is not a")
    assert "\n" not in message
    # torch's own message for this file is a bare number; alone it tells the user nothing.
    assert not re.search(r": \d+$", message), message
