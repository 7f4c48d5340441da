"""The compression benchmark's --quick smoke run writes a complete table section."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _load_main() -> Any:
    spec = importlib.util.spec_from_file_location(
        "compression_bench", ROOT / "benchmarks" / "compression.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.main


def test_quick_benchmark_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    dump = tmp_path / "results.json"
    main = _load_main()
    main(["--quick", "--threads", "1", "--results", str(out), "--json", str(dump), "--only", "eq:"])
    text = out.read_text()
    assert "<!-- BEGIN compression -->" in text and "<!-- END compression -->" in text
    rows = json.loads(dump.read_text())
    methods = {r["method"].split()[0] for r in rows}
    assert methods == {"metacluster", "kmeans", "scalar", "pq", "int4", "int8"}
    for r in rows:
        assert (
            r["bytes_after"] > 0 and abs(r["ratio"] - r["bytes_before"] / r["bytes_after"]) < 1e-9
        )
    assert [r["k"] for r in rows if r["method"] == "metacluster"] == [4, 8]
    assert text.count("| eq:xy bspline 2,8,1 |") == len(rows)
