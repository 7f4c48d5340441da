"""`metacluster remote submit` as a newcomer meets it: a bad method or option is refused
before anything is uploaded, and `--download out/` means a folder even before it exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from metacluster.cli import cli
from metacluster.client import Artifact
from metacluster.client.transport import destination as _destination

# Nothing listens here: a command that tried to upload would fail "cannot talk to".
NOWHERE = ["remote", "--url", "http://127.0.0.1:9", "--api-key", "mck_test"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "kmean"], "unknown compression method 'kmean'; expected one of"),
        (["--method", "pq", "--method-option", "bits=99"], "pq: bits must be in 1..16"),
        (["--set", "soft_epochs=-1"], "soft_epochs must be an integer"),
    ],
)
def test_submit_checks_the_config_before_uploading(
    tmp_path: Path, args: list[str], message: str
) -> None:
    model = tmp_path / "kan.safetensors"
    model.write_bytes(b"not read: the config is refused first")
    result = CliRunner().invoke(cli, [*NOWHERE, "submit", str(model), "--data", "digits", *args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "cannot talk to the service" not in result.stderr
    assert "uploaded model" not in result.stderr


def _artifact() -> Artifact:
    return Artifact("job_1", "model.mcz", 3, "0" * 64, "/v1/jobs/job_1/artifacts/model.mcz")


@pytest.mark.parametrize("given", ["out/", "out"])
def test_download_destination_folder_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.chdir(tmp_path)
    dest = _destination(given, _artifact())
    if given.endswith("/"):  # a trailing slash: a folder, made now
        assert dest == Path("out") / "model.mcz" and (tmp_path / "out").is_dir()
    else:  # no slash and no such folder: that file
        assert dest == Path("out") and not (tmp_path / "out").exists()
    (tmp_path / "dir").mkdir()
    assert _destination("dir", _artifact()) == Path("dir") / "model.mcz"  # an existing folder
