"""Reports with pictures (`metacluster.reporting`, `metacluster report`), drawn from the
report of a real `metacluster compress` run (a K sweep with the baselines)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metacluster.reporting import PLOTS, _frontier, load_report, render_report

pytest.importorskip("matplotlib", reason="the report extra is not installed")

PNG = b"\x89PNG\r\n\x1a\n"


def _metacluster() -> list[str]:
    script = Path(sys.executable).with_name("metacluster")
    return [str(script)] if script.exists() else [shutil.which("metacluster") or "metacluster"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*_metacluster(), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A digits KAN, compressed with a K sweep: the artifact and its report JSON."""
    root = tmp_path_factory.mktemp("report-run")
    model, artifact = root / "m.safetensors", root / "m.mcz"
    _run("train", "--data", "digits", "--family", "bspline", "--width", "64,6,10",
         "--epochs", "2", "--out", str(model))  # fmt: skip
    out = _run("compress", str(model), "--data", "digits", "--k", "4,8", "--epochs", "2",
               "--finetune-epochs", "1", "--baselines", "--out", str(artifact), "--json")  # fmt: skip
    report_json = root / "report.json"
    report_json.write_text(out.stdout)
    return {"artifact": artifact, "json": report_json, "report": json.loads(out.stdout)}


def _images_in(page: str) -> list[str]:
    return re.findall(r'<img alt="([a-z]+)" src="data:image/png;base64,', page)


def test_every_picture_is_drawn_and_inlined(compressed: dict[str, Any], tmp_path: Path) -> None:
    report = compressed["report"]
    assert report["baselines"] and report["projection"] and report["codebook_functions"]
    rendered = render_report(report, tmp_path)
    assert sorted(rendered.images) == sorted(PLOTS)
    for path in rendered.images.values():
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000
    page = rendered.html.read_text()
    assert _images_in(page) == list(PLOTS)
    # Self-contained: nothing to fetch from anywhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert f"{report['ratio']:.3g}×" in page and report["metric"] in page
    for row in report["sweep"]:
        assert f"<td>{report['method']}</td><td>{row['k']}</td>" in page
    for base in report["baselines"]:
        assert f"<td>{base['method']}" in page
    for layer in report["layers"]:
        assert f"<td>{layer['name']}</td>" in page


def test_missing_keys_leave_their_sections_out(compressed: dict[str, Any], tmp_path: Path) -> None:
    partial = {
        k: v
        for k, v in compressed["report"].items()
        if k not in ("baselines", "projection", "codebook_functions", "sweep", "layers")
    }
    rendered = render_report(partial, tmp_path / "partial")
    assert sorted(rendered.images) == ["bytes", "pareto"]  # the one run, the file's bytes
    bare = render_report({}, tmp_path / "bare")
    assert bare.images == {} and "<h1>" in bare.html.read_text()


def test_text_from_the_report_is_escaped(tmp_path: Path) -> None:
    hostile = {
        "metric": "<b>accuracy</b>",
        "layers": [{"name": "<script>alert(1)</script>", "edges": 4, "coef_rel_error": 0.1}],
    }
    page = render_report(hostile, tmp_path).html.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>accuracy" not in page and "&lt;b&gt;accuracy&lt;/b&gt;" in page


def test_the_frontier_keeps_only_undominated_runs() -> None:
    points = [
        {"bytes_after": 100, "after": 0.8},
        {"bytes_after": 200, "after": 0.7},  # more bytes, worse: dominated
        {"bytes_after": 300, "after": 0.9},
        {"bytes_after": 50, "after": 0.5},
    ]
    front = _frontier(points, higher_is_better=True)
    assert [p["bytes_after"] for p in front] == [50, 100, 300]
    rmse = _frontier(
        [{"bytes_after": 1, "after": 0.5}, {"bytes_after": 2, "after": 0.2}],
        higher_is_better=False,
    )
    assert [p["after"] for p in rmse] == [0.5, 0.2]


def test_report_command_from_the_json_and_from_the_artifact(
    compressed: dict[str, Any], tmp_path: Path
) -> None:
    out = _run("report", str(compressed["json"]), "--out", str(tmp_path / "a"), "--json")
    result = json.loads(out.stdout)
    assert sorted(result["images"]) == sorted(PLOTS) and Path(result["html"]).is_file()

    # The artifact alone: its bytes, codebook functions and stored vectors.
    from_artifact = load_report(compressed["artifact"])
    assert from_artifact["bytes_after"] == compressed["artifact"].stat().st_size
    assert from_artifact["bytes_breakdown"] == compressed["report"]["bytes_breakdown"]
    assert set(from_artifact["codebook_functions"]) == set(
        compressed["report"]["codebook_functions"]
    )
    out = _run("report", str(compressed["artifact"]), "--out", str(tmp_path / "b"), "--json")
    images = json.loads(out.stdout)["images"]
    assert {"pareto", "bytes", "codebooks", "projection"} <= set(images)

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    failed = subprocess.run(
        [*_metacluster(), "report", str(bad), "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("error:")


def test_the_validation_numbers_say_what_they_are(tmp_path: Path) -> None:
    report = {"metric": "accuracy", "val_before": 1.0, "val_after": 1.0}
    page = render_report({**report, "config": {"val_fraction": 0.1}}, tmp_path / "a")
    text = page.html.read_text()
    assert "Validation split: 1 → 1" not in text
    assert "Validation accuracy, before → after compression: 1 → 1, on 10% of the training" in text
    assert "the test set above is never used for them" in text
    whole = render_report({**report, "config": {"val_fraction": 0}}, tmp_path / "b")
    assert "1 → 1, on the training data itself" in whole.html.read_text()
