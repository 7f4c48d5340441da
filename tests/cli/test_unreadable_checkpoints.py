"""A file that is no checkpoint is named, described and answered with what was expected,
whatever kind of garbage it is (never a reader's bare exception such as `KeyError: 101`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metacluster.cli import cli
from metacluster.errors import FormatError
from metacluster.formats._io import EXPECTED, read_tensor_file


def _torch_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(256)}, path)
    return path.read_bytes()


def _other_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")


GARBAGE = {
    "notes.txt": (lambda p, _: p.write_text("my notes\nline two\n"), "a text file"),
    "empty.pt": (lambda p, _: p.write_bytes(b""), "the file is empty"),
    "random.bin": (
        lambda p, _: p.write_bytes(np.random.default_rng(1).bytes(3000)),
        "3000 bytes of no known container",
    ),
    "half.pt": (
        lambda p, ok: p.write_bytes(ok[: len(ok) // 2]),
        "a truncated or damaged zip archive",
    ),
    "other.zip": (lambda p, _: _other_zip(p), "a zip archive that torch.save did not write"),
    "cut.safetensors": (
        lambda p, _: p.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{" + b'"a": ' * 4),
        "a damaged or truncated safetensors file",
    ),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_is_described(tmp_path: Path, name: str) -> None:
    make, what = GARBAGE[name]
    path = tmp_path / name
    make(path, _torch_bytes(tmp_path))
    with pytest.raises(FormatError) as info:
        read_tensor_file(path)
    message = str(info.value)
    assert message.startswith(f"{name} is not a readable model checkpoint: {what}"), message
    assert message.endswith(EXPECTED) and "Error:" not in message and "\n" not in message
    assert info.value.code == "unsupported_format"

    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"
