"""The compression benchmark's --quick smoke run writes all its sections, on a checkpoint
written by efficient-kan's own code (the reference copy), through the real use case."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location(
        "compression_bench", ROOT / "benchmarks" / "compression.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_its_sections(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    dump = tmp_path / "results.json"
    bench = _load()
    bench.main(["--quick", "--threads", "1", "--results", str(out), "--json", str(dump)])
    text = out.read_text()
    for section in (
        "compression",
        "compression_frontier",
        "compression_ablation",
        "compression_speed",
    ):
        assert f"<!-- BEGIN {section} -->" in text and f"<!-- END {section} -->" in text
    data = json.loads(dump.read_text())
    (row,) = data["rows"]
    target = row["target"]
    assert (
        target["bytes_after"] > 0
        and sum(target["bytes_breakdown"].values()) == target["bytes_after"]
    )
    assert abs(target["ratio"] - target["bytes_before"] / target["bytes_after"]) < 1e-9
    assert target["budget_bytes"] and target["bytes_after"] <= target["budget_bytes"]
    assert {b["method"] for b in row["baselines"]} == {"scalar", "pq", "int4", "int8"}
    assert [r["k"] for r in row["metacluster_sweep"]] == [4, 8]
    assert set(row["checks"]) == {"drop", "frontier"}
    assert [a["variant"] for a in data["ablation"]] == list(bench.ABLATION)
    assert data["speed"][0]["wall_s"] > 0
    # every baseline shows whether MetaCluster dominates it
    assert text.count("| efficient-kan 2-8-1, eq x*y |") == len(row["mc_points"]) + len(
        row["kmeans_sweep"]
    ) + len(row["baselines"]) + 1 + len(bench.ABLATION)

    # --merge re-runs the chosen rows and keeps the rest of the earlier run
    data["rows"].append({**row, "row": "a row of the run before"})
    dump.write_text(json.dumps(data))
    bench.main(["--quick", "--merge", "--threads", "1", "--results", str(out), "--json", str(dump)])
    merged = json.loads(dump.read_text())
    assert [r["row"] for r in merged["rows"]] == [row["row"], "a row of the run before"]
    assert merged["ablation"] == data["ablation"] and merged["speed"] == data["speed"]
    text = out.read_text()
    assert "| a row of the run before |" in text
    assert "efficient-kan 2-8-1, eq x*y re-run alone in" in text
    assert "(--merge), the other rows and sections from the run before" in text

    # --speed-only re-times the sweep alone: rows and ablation stay, speed is new. The
    # earlier entry is marked first: two timings can round to the same tenth of a second
    stale = {"row": "the timing of the run before", "ks": [0], "wall_s": -1.0, "stages": {}}
    dump.write_text(json.dumps({**merged, "speed": [stale]}))
    bench.main(
        ["--quick", "--speed-only", "--threads", "1", "--results", str(out), "--json", str(dump)]
    )
    timed = json.loads(dump.read_text())
    assert timed["rows"] == merged["rows"] and timed["ablation"] == merged["ablation"]
    (fresh,) = timed["speed"]
    assert fresh["row"] == row["row"] and fresh["ks"] == [4, 8] and fresh["wall_s"] > 0
    assert "the timing of the run before" not in out.read_text()
    assert "| a row of the run before |" in out.read_text()
