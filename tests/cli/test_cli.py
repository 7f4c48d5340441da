"""The `metacluster` command: JSON outputs, one-line errors, and the installed script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from metacluster.cli import cli

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=ENV)


def run_json(*args: str) -> dict[str, Any]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # exactly one JSON object on stdout
    out = json.loads(lines[0])
    assert isinstance(out, dict)
    return out


def assert_one_line_error(result: Result, *fragments: str, code: int | None = None) -> None:
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small digits model trained through the CLI (shared by the read-only tests)."""
    out = tmp_path_factory.mktemp("cli") / "m.safetensors"
    result = run_json(
        "train",
        "--data",
        "digits",
        "--family",
        "bspline",
        "--width",
        "64,8,10",
        "--epochs",
        "3",
        "--out",
        str(out),
    )
    return out, result


class TestTrain:
    def test_json_report_and_file(self, trained: tuple[Path, dict[str, Any]]) -> None:
        path, result = trained
        assert set(result) >= {"metric", "value", "params", "edges", "bytes", "seconds", "out"}
        assert result["metric"] == "accuracy" and 0.8 < result["value"] <= 1.0
        assert result["edges"] == 64 * 8 + 8 * 10
        assert result["params"] == (64 * 8 + 8 * 10) * 9  # G+k+1 = 9 per edge, no biases
        assert result["bytes"] == path.stat().st_size and result["out"] == str(path)

    def test_eval_confirms_train_number(self, trained: tuple[Path, dict[str, Any]]) -> None:
        path, result = trained
        ev = run_json("eval", str(path), "--data", "digits")
        assert ev["metric"] == "accuracy" and ev["value"] == pytest.approx(
            result["value"], abs=1e-9
        )

    def test_inspect(self, trained: tuple[Path, dict[str, Any]]) -> None:
        path, result = trained
        info = run_json("inspect", str(path))
        assert info["family"] == "bspline" and info["format"] == "metacluster"
        assert info["edges"] == result["edges"] and info["bytes"] == path.stat().st_size
        assert [(layer["in"], layer["out"], layer["coef_dim"]) for layer in info["layers"]] == [
            (64, 8, 9),
            (8, 10, 9),
        ]

    def test_human_output(self, trained: tuple[Path, dict[str, Any]]) -> None:
        result = run("inspect", str(trained[0]))
        assert result.exit_code == 0
        assert "family: bspline" in result.stdout and "edges: 592" in result.stdout

    def test_regression_with_family_options(self, tmp_path: Path) -> None:
        out = tmp_path / "r.safetensors"
        result = run_json(
            "train",
            "--data",
            "eq:xy?n_train=200&n_test=100",
            "--family",
            "chebyshev",
            "--width",
            "2,3,1",
            "--degree",
            "3",
            "--epochs",
            "2",
            "--out",
            str(out),
        )
        assert result["metric"] == "rmse" and result["value"] > 0
        assert run_json("inspect", str(out))["layers"][0]["coef_dim"] == 4

    def test_data_seed_selects_the_same_samples_everywhere(self, tmp_path: Path) -> None:
        out = tmp_path / "s.safetensors"
        data = "eq:xy?n_train=60&n_test=30"
        trained = run_json(
            "train",
            "--data",
            data,
            "--family",
            "bspline",
            "--width",
            "2,1",
            "--epochs",
            "1",
            "--data-seed",
            "7",
            "--out",
            str(out),
        )
        same = run_json("eval", str(out), "--data", data, "--data-seed", "7")
        other = run_json("eval", str(out), "--data", data)
        assert same["value"] == pytest.approx(trained["value"], rel=1e-9)
        assert other["value"] != pytest.approx(trained["value"], rel=1e-6)

    def test_image_npz_dense_and_conv(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(0)
        data = tmp_path / "img.npz"
        np.savez(
            data,
            x_train=rng.uniform(-1, 1, (24, 1, 6, 6)),
            y_train=rng.integers(0, 3, 24),
            x_test=rng.uniform(-1, 1, (8, 1, 6, 6)),
            y_test=rng.integers(0, 3, 8),
        )
        dense = run_json(
            "train",
            "--data",
            str(data),
            "--family",
            "bspline",
            "--width",
            "36,4,3",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "d.safetensors"),
        )
        assert dense["edges"] == 36 * 4 + 4 * 3
        conv = run_json(
            "train",
            "--data",
            str(data),
            "--family",
            "conv_bspline",
            "--width",
            "3",
            "--channels",
            "2",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "c.safetensors"),
        )
        assert conv["edges"] == 1 * 2 * 3 * 3  # one edge per (out, in, kh, kw)
        ev = run_json("eval", str(tmp_path / "c.safetensors"), "--data", str(data))
        assert ev["value"] == pytest.approx(conv["value"], abs=1e-9)
        flat = run(
            "train",
            "--data",
            "digits",
            "--family",
            "conv_bspline",
            "--width",
            "10",
            "--out",
            str(tmp_path / "x.safetensors"),
        )
        assert_one_line_error(flat, "needs image inputs", "--input-shape")

    def test_progress_goes_to_stderr(self, tmp_path: Path) -> None:
        result = run(
            "train",
            "--data",
            "eq:xy?n_train=50&n_test=20",
            "--family",
            "bspline",
            "--width",
            "2,1",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "p.safetensors"),
            "--json",
            "--progress",
        )
        assert result.exit_code == 0
        assert "train" in result.stderr and "2/2" in result.stderr
        json.loads(result.stdout)


class TestErrors:
    def test_missing_model_file(self, tmp_path: Path) -> None:
        assert_one_line_error(
            run("eval", str(tmp_path / "nope.pt"), "--data", "digits"), "nope.pt", code=1
        )

    def test_bad_width(self, tmp_path: Path) -> None:
        result = run(
            "train",
            "--data",
            "digits",
            "--family",
            "bspline",
            "--width",
            "64,x,10",
            "--out",
            str(tmp_path / "m.safetensors"),
        )
        assert_one_line_error(result, "--width", "comma-separated integers", code=2)

    def test_unknown_family(self, tmp_path: Path) -> None:
        result = run(
            "train",
            "--data",
            "digits",
            "--family",
            "squiggle",
            "--width",
            "64,10",
            "--out",
            str(tmp_path / "m.safetensors"),
        )
        assert_one_line_error(result, "unknown KAN family 'squiggle'", code=1)

    def test_unsupported_format(self, trained: tuple[Path, dict[str, Any]]) -> None:
        assert_one_line_error(
            run("inspect", str(trained[0]), "--format", "tensorflow"),
            "unsupported format 'tensorflow'",
        )

    def test_not_a_checkpoint(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk.pt"
        junk.write_bytes(b"\x00\x01 definitely not a checkpoint")
        assert_one_line_error(run("inspect", str(junk)))

    def test_incompatible_dataset(self, trained: tuple[Path, dict[str, Any]]) -> None:
        result = run("eval", str(trained[0]), "--data", "eq:xy")
        assert_one_line_error(result, "regression", code=1)
        result = run("eval", str(trained[0]), "--data", "mnist1d?num_samples=40")
        assert_one_line_error(result, "64 input features", "40")

    def test_width_does_not_fit_data(self, tmp_path: Path) -> None:
        result = run(
            "train",
            "--data",
            "digits",
            "--family",
            "bspline",
            "--width",
            "10,10",
            "--out",
            str(tmp_path / "m.safetensors"),
        )
        assert_one_line_error(result, "first width 10", "64 input features")

    def test_unknown_dataset(self, tmp_path: Path) -> None:
        result = run(
            "train",
            "--data",
            "imagenet",
            "--family",
            "bspline",
            "--width",
            "64,10",
            "--out",
            str(tmp_path / "m.safetensors"),
        )
        assert_one_line_error(result, "no such data set or file: 'imagenet'")

    def test_bad_data_file(self, tmp_path: Path, trained: tuple[Path, dict[str, Any]]) -> None:
        bad = tmp_path / "bad.npz"
        np.savez(
            bad,
            x_train=np.zeros((3, 64)),
            y_train=np.zeros(2, np.int64),
            x_test=np.zeros((1, 64)),
            y_test=np.zeros(1, np.int64),
        )
        assert_one_line_error(
            run("eval", str(trained[0]), "--data", str(bad)), "3 rows but y_train has 2"
        )

    def test_missing_required_option(self) -> None:
        assert_one_line_error(run("eval", "m.safetensors"), "--data", code=2)

    def test_bare_command_prints_help_to_stderr(self) -> None:
        result = run()
        assert result.exit_code == 2 and result.stdout == ""
        assert "Usage: " in result.stderr and "compress" in result.stderr

    def test_unknown_command(self) -> None:
        assert_one_line_error(run("frobnicate"), "frobnicate", code=2)

    def test_bad_k(self, trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
        result = run(
            "compress",
            str(trained[0]),
            "--data",
            "digits",
            "--k",
            "1",
            "--out",
            str(tmp_path / "a.mcz"),
        )
        assert_one_line_error(result, "--k", code=2)

    def test_service_commands_without_the_api_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # simulate a core-only install: importing the service fails
        monkeypatch.setitem(sys.modules, "service.embedded", None)
        assert_one_line_error(run("keys", "create", "--name", "ci"), "metacluster[api]", code=1)
        assert_one_line_error(run("serve", "--port", "1"), "metacluster[api]", code=1)


class TestServiceDelegation:
    def test_keys_create_prints_id_name_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import types

        calls: list[str] = []
        fake = types.ModuleType("service.embedded")

        def create_key(name: str) -> dict[str, str]:
            calls.append(name)
            return {"id": "k1", "name": name, "key": "mc_secret", "extra": "hidden"}

        fake.create_key = create_key  # type: ignore[attr-defined]
        fake.describe_database = lambda: ("/srv/mc/metacluster.db", False)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "service.embedded", fake)
        out = run_json("keys", "create", "--name", "ci")
        assert out == {"id": "k1", "name": "ci", "key": "mc_secret"} and calls == ["ci"]
        # which database the key is for goes to stderr, never into the JSON
        result = run("keys", "create", "--name", "ci", "--json")
        assert "creating a new key database /srv/mc/metacluster.db" in result.stderr

    def test_serve_passes_host_and_port(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import types

        seen: list[tuple[str, int]] = []
        fake = types.ModuleType("service.embedded")
        fake.serve = lambda host, port: seen.append((host, port))  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "service.embedded", fake)
        assert run("serve", "--host", "0.0.0.0", "--port", "9001").exit_code == 0
        assert seen == [("0.0.0.0", 9001)]


def test_json_output_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    from metacluster.cli import _emit

    _emit({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": Path("x")}}, True)
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [1.0, None], "c": {"d": "x"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read config"),  # no such file
        ("{not json", "cannot read config"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_config_file_errors_are_config_errors(
    tmp_path: Path, text: str | None, message: str
) -> None:
    """`compress --config` and `remote compress --config` read the file the same way."""
    from metacluster._output import read_config_file
    from metacluster.errors import ConfigError

    path = tmp_path / "cfg.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config_file(str(path))
    path.write_text('{"k": 8}')
    assert read_config_file(str(path)) == {"k": 8}


def test_data_list_shows_equations() -> None:
    out = run_json("data", "list")
    assert "digits" in out["builtin"]
    assert {"exp_mean_sin_sq_100d", "xy"} <= {e["name"] for e in out["equations"]}


class TestCompressEvalExport:
    def test_compress_then_eval_then_export(
        self, trained: tuple[Path, dict[str, Any]], tmp_path: Path
    ) -> None:
        path, _ = trained
        artifact = tmp_path / "m.mcz"
        report = run_json(
            "compress",
            str(path),
            "--data",
            "digits",
            "--k",
            "8",
            "--out",
            str(artifact),
            "--epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--config",
            str(_write(tmp_path / "cfg.json", {"regress_steps": 50})),
        )
        keys = {"metric", "before", "after", "ratio", "bytes_before", "bytes_after", "k", "stages"}
        assert keys <= set(report)
        assert report["k"] == 8 and report["metric"] == "accuracy"
        assert report["bytes_after"] == artifact.stat().st_size
        assert report["ratio"] == pytest.approx(report["bytes_before"] / report["bytes_after"])
        assert report["ratio"] > 5 and report["config"]["regress_steps"] == 50
        assert all(isinstance(v, float) for v in report["stages"].values())
        ev = run_json("eval", str(artifact), "--data", "digits")
        assert ev["kind"] == "artifact" and ev["value"] == pytest.approx(report["after"], abs=1e-6)
        info = run_json("inspect", str(artifact))
        assert info["format"] == "artifact" and info["bytes"] == artifact.stat().st_size
        assert info["method"] == "dkm" and info["edges"] == 592  # the default method
        assert sum(cb["edges"] for cb in info["codebooks"]) == 592
        assert {cb["k"] for cb in info["codebooks"]} == {8}
        assert_one_line_error(
            run("export", str(artifact), "--to", "tflite", "--out", str(tmp_path / "x")),
            "unsupported export format 'tflite'",
            "onnx",
        )
        exported = run_json(
            "export", str(artifact), "--to", "efficient-kan", "--out", str(tmp_path / "ek.pt")
        )
        assert exported["files"] and Path(exported["files"][0]).is_file()
        again = run_json("eval", exported["files"][0], "--data", "digits")
        assert again["kind"] == "model" and again["value"] == pytest.approx(ev["value"], abs=1e-9)
        # an artifact is not compressed twice
        assert_one_line_error(
            run(
                "compress",
                str(artifact),
                "--data",
                "digits",
                "--k",
                "4",
                "--out",
                str(tmp_path / "b.mcz"),
            ),
            "already a MetaCluster artifact",
        )

    def test_a_byte_budget_instead_of_a_k(
        self, trained: tuple[Path, dict[str, Any]], tmp_path: Path
    ) -> None:
        path, _ = trained
        fast = {"regress_steps": 40, "meta_epochs": 1, "soft_epochs": 1, "finetune_epochs": 1}
        fast["soft_min_steps"] = 0
        cfg = _write(tmp_path / "fast.json", {**fast, "baselines": False})
        art = tmp_path / "b.mcz"
        report = run_json(
            "compress", str(path), "--data", "digits", "--max-bytes", "3000",
            "--out", str(art), "--config", str(cfg),
        )  # fmt: skip
        assert (
            report["budget_bytes"] == 3000 and report["bytes_after"] == art.stat().st_size <= 3000
        )
        assert {layer["mode"] for layer in report["layers"]} <= {"codebook", "uniform", "dense"}
        assert sum(report["bytes_breakdown"].values()) == report["bytes_after"]
        # a --config file that sets the budget, and no --k
        ratio_cfg = _write(
            tmp_path / "ratio.json", {**fast, "baselines": False, "target_ratio": 15}
        )
        report = run_json(
            "compress", str(path), "--data", "digits", "--out", str(art), "--config", str(ratio_cfg)
        )
        assert report["budget_bytes"] == report["bytes_before"] // 15 >= report["bytes_after"]
        assert_one_line_error(
            run("compress", str(path), "--data", "digits", "--k", "8", "--max-bytes", "3000",
                "--out", str(art)),
            "not both",
            code=2,
        )  # fmt: skip
        # without --json: a readable summary with the byte breakdown and one line per layer
        text = run(
            "compress", str(path), "--data", "digits", "--max-bytes", "3000",
            "--out", str(art), "--config", str(cfg),
        ).stdout  # fmt: skip
        assert "breakdown: codebooks" in text and "layers.0" in text and "ratio" in text

    def test_bad_config_file(self, trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
        cfg = _write(tmp_path / "cfg.json", {"no_such_knob": 1})
        result = run(
            "compress",
            str(trained[0]),
            "--data",
            "digits",
            "--k",
            "4",
            "--out",
            str(tmp_path / "a.mcz"),
            "--config",
            str(cfg),
        )
        assert_one_line_error(result, "no_such_knob")

    def test_d_emb_out_of_range(self, trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
        result = run(
            "compress",
            str(trained[0]),
            "--data",
            "digits",
            "--k",
            "4",
            "--d-emb",
            "9",
            "--out",
            str(tmp_path / "a.mcz"),
        )
        assert_one_line_error(result, "d_emb")


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _console_script() -> str:
    exe = Path(sys.executable).parent / "metacluster"
    found = str(exe) if exe.exists() else shutil.which("metacluster")
    if found is None:
        pytest.skip("the metacluster console script is not installed")
    return found


class TestInstalledScript:
    def test_real_subprocess_train_and_eval(self, tmp_path: Path) -> None:
        exe = _console_script()
        env = {**os.environ, **ENV}
        out = tmp_path / "s.safetensors"
        proc = subprocess.run(
            [
                exe,
                "train",
                "--data",
                "eq:xy?n_train=100&n_test=50",
                "--family",
                "bspline",
                "--width",
                "2,2,1",
                "--epochs",
                "2",
                "--out",
                str(out),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        trained = json.loads(proc.stdout)
        proc = subprocess.run(
            [exe, "eval", str(out), "--data", "eq:xy?n_train=100&n_test=50", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["value"] == pytest.approx(trained["value"], rel=1e-9)

    def test_real_subprocess_one_line_error(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [_console_script(), "inspect", str(tmp_path / "missing.safetensors"), "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, **ENV},
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")


# Not marked slow: the acceptance command takes seconds and CI must hold it.
def test_digits_reaches_96_percent_and_eval_agrees(tmp_path: Path) -> None:
    """The README's train command: >= 0.96 test accuracy, confirmed by `eval`."""
    out = tmp_path / "m.safetensors"
    result = run_json(
        "train",
        "--data",
        "digits",
        "--family",
        "bspline",
        "--width",
        "64,32,10",
        "--epochs",
        "30",
        "--out",
        str(out),
    )
    assert result["value"] >= 0.96
    ev = run_json("eval", str(out), "--data", "digits")
    assert ev["value"] == pytest.approx(result["value"], abs=1e-9)
