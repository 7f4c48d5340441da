"""The issue's acceptance runs through the real `metacluster` command, written as a table.

Digits B-spline KAN 64,256,10: train -> compress --k 16 -> eval the artifact, for our own
checkpoint and for the same weights as an efficient-kan state dict (post-hoc mode).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._results import markdown_table, write_section

CLI = [sys.executable, "-m", "metacluster.cli"]


def run(*args: str) -> dict[str, Any]:
    """One CLI command with --json; its JSON object."""
    proc = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return dict(json.loads(proc.stdout))


def acceptance(width: str, epochs: int, k: int, workdir: Path) -> list[dict[str, Any]]:
    src = workdir / "m.safetensors"
    trained = run(
        "train",
        "--data",
        "digits",
        "--family",
        "bspline",
        "--width",
        width,
        "--epochs",
        str(epochs),
        "--out",
        str(src),
    )
    ek = workdir / "m_efficient_kan.pt"
    # The same trained weights in efficient-kan's own layout, as its users save them.
    run("export", str(src), "--to", "efficient-kan", "--out", str(ek))
    rows = []
    for label, path in (("metacluster .safetensors", src), ("efficient-kan state_dict", ek)):
        art = workdir / f"{path.stem}.mcz"
        t0 = time.perf_counter()
        report = run("compress", str(path), "--data", "digits", "--k", str(k), "--out", str(art))
        seconds = time.perf_counter() - t0
        evaluated = run("eval", str(art), "--data", "digits")
        rows.append(
            {
                "source": label,
                "trained": trained["value"],
                "report": report,
                "eval": evaluated["value"],
                "seconds": seconds,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", default="64,256,10")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = acceptance(args.width, args.epochs, args.k, Path(tmp))
    table = []
    for r in rows:
        rep = r["report"]
        drop = (rep["before"] - rep["after"]) * 100
        ok = rep["ratio"] >= 50 and drop <= 1.0 and abs(r["eval"] - rep["after"]) < 1e-6
        table.append(
            [
                r["source"],
                rep["k"],
                f"{rep['before']:.4f}",
                f"{rep['after']:.4f}",
                f"{r['eval']:.4f}",
                f"{drop:+.2f}",
                rep["bytes_before"],
                rep["bytes_after"],
                f"{rep['ratio']:.1f}",
                f"{r['seconds']:.0f}",
                "yes" if ok else "no",
            ]
        )
    md = (
        f"## CLI acceptance: digits B-spline {args.width}, {args.epochs} epochs, K={args.k}\n\n"
        "`metacluster train` -> (`export --to efficient-kan`) -> `compress --json` -> `eval` of "
        "the artifact, each a real subprocess. drop = points lost by compression. "
        "target: ratio >= 50, drop <= 1.0, and eval of the artifact equal to the report.\n\n"
        + markdown_table(
            [
                "source checkpoint",
                "K",
                "before",
                "after",
                "eval(artifact)",
                "drop pts",
                "bytes before",
                "bytes after",
                "ratio",
                "compress s",
                "target",
            ],
            table,
        )
    )
    print(md)
    if not args.no_write:
        write_section("cli_acceptance", md)


if __name__ == "__main__":
    main()
