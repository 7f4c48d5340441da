"""Bad artifacts are refused at load with a FormatError that says what is wrong, under
both runtimes, never an index error at inference."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from runtime_helpers import artifact
from safetensors import safe_open
from safetensors.torch import save as st_save

from metacluster.artifact import load_artifact
from metacluster.errors import ArtifactError, FormatError
from metacluster.kan import build_kan

Manifest = dict[str, Any]


def _rewrite(path: Path, edit: Callable[[Manifest], None]) -> Path:
    """Rewrite the manifest of a version-2 artifact (the payload and its hash stay)."""
    with safe_open(str(path), framework="pt") as f:
        length = int(f.metadata()["mcz"].split(":")[1])
        blob = bytes(f.get_tensor("p").numpy().tobytes())
    manifest = json.loads(zlib.decompress(blob[:length]))
    edit(manifest)
    packed = zlib.compress(json.dumps(manifest).encode())
    data = packed + blob[length:]
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    out = path.with_name("bad.mcz")
    out.write_bytes(st_save({"p": tensor}, metadata={"mcz": f"2:{len(packed)}"}))
    return out


@pytest.fixture
def good(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return artifact(build_kan("bspline", [6, 5, 3]), "vq", tmp_path / "m.mcz", k=5)


def _fewer_centroids(m: Manifest) -> None:
    # k 5 -> 3 with the same 3-bit index stream: indices 3 and 4 point past the codebook
    # (the centroid bytes are cut to match, so only the indices disagree)
    m["cb"][0]["k"] = 3
    m["cb"][0]["o"][0] = 3 * 9 * 4
    m["cb"][0]["o"][1] += 2 * 9 * 4


EDITS: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "indices past the codebook": (_fewer_centroids, "index stream does not match"),
    "columns past the vector": (
        lambda m: m["cb"][0].update(c=[0, 12], s=12),
        "does not fit vectors of length 9",
    ),
    "centroid bytes disagree": (
        lambda m: m["cb"][0].update(s=3, c=[0, 9]),
        "holds 180 bytes",
    ),
    "index count disagrees": (
        lambda m: m["cb"][0].update(n=m["cb"][0]["n"] - 1),
        "index count does not match",
    ),
    "unknown group": (lambda m: m["cb"][0].update(g=7), "unknown edge group"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
@pytest.mark.parametrize("runtime", ["dense", "compressed"])
def test_inconsistent_manifest_is_refused(good: Path, case: str, runtime: str) -> None:
    edit, message = EDITS[case]
    bad = _rewrite(good, edit)
    with pytest.raises(FormatError, match=message):
        load_artifact(bad, runtime=runtime)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
@pytest.mark.parametrize("runtime", ["dense", "compressed"])
def test_truncated_file_is_refused(good: Path, keep: float, runtime: str) -> None:
    data = good.read_bytes()
    cut = good.with_name("cut.mcz")
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArtifactError, match=r"not a readable artifact|corrupt"):
        load_artifact(cut, runtime=runtime)


def test_artifact_errors_are_format_errors() -> None:
    assert issubclass(ArtifactError, FormatError)
    assert ArtifactError("x").code == "invalid_artifact"
