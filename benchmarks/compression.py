"""Compression benchmark: MetaCluster vs plain K-means and baselines, real bytes on disk.

Run `python benchmarks/compression.py` (full, ~30 min on 2 cores) or `--quick` (smoke);
it writes its table into benchmarks/RESULTS.md via benchmarks._results.write_section.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._results import RESULTS, markdown_table, write_section  # noqa: E402
from metacluster.compress import MetaClusterConfig, compress  # noqa: E402
from metacluster.compress.report import CompressionReport  # noqa: E402
from metacluster.data import load_dataset  # noqa: E402
from metacluster.training import build_model_for, evaluate, train_model  # noqa: E402
from metacluster.workflow import ArtifactSizer  # noqa: E402


@dataclass
class Row:
    """One benchmark model: data, family, widths, training and compression settings."""

    data: str
    family: str
    widths: list[int]
    epochs: int
    lr: float = 1e-2
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


EQ: dict[str, Any] = {"scope": "global", "codebook_dtype": "float16"}
FULL_ROWS = [
    Row("digits", "bspline", [64, 256, 10], 30),
    Row("digits", "rbf", [64, 128, 10], 30),
    Row("digits", "chebyshev", [64, 128, 10], 30),
    Row(
        "mnist1d",
        "bspline",
        [40, 128, 10],
        60,
        lr=3e-3,
        config={"d_emb": 2, "soft_epochs": 40, "finetune_epochs": 5, "finetune_lr": 1e-3},
    ),
    # Equation rows: grid 10 (pykan's usual), one global fp16 codebook; the 100-input row
    # is the paper's high-dimensional setting, the small ones show where headers weigh.
    Row("eq:exp_sin_sq_4d", "bspline", [4, 128, 1], 60, options={"grid_size": 10}, config=EQ),
    Row("eq:feynman_I_12_11", "bspline", [5, 128, 1], 60, options={"grid_size": 10}, config=EQ),
    Row(
        "eq:exp_mean_sin_sq_100d", "bspline", [100, 64, 1], 60, options={"grid_size": 10}, config=EQ
    ),
]
QUICK_ROWS = [
    Row(
        "digits",
        "bspline",
        [64, 16, 10],
        3,
        config={"regress_steps": 30, "meta_epochs": 1, "soft_epochs": 1, "finetune_epochs": 1},
    ),
    Row(
        "eq:xy",
        "bspline",
        [2, 8, 1],
        5,
        config={"regress_steps": 30, "meta_epochs": 1, "soft_epochs": 1, "finetune_epochs": 1},
    ),
]
FULL_KS = [4, 8, 16, 32]
QUICK_KS = [4, 8]


def _pq_m(coef_dim: int) -> int:
    """Smallest divisor > 1 of the vector length: the PQ split closest to VQ's bytes."""
    return next(m for m in range(2, coef_dim + 1) if coef_dim % m == 0)


def _drop(r: CompressionReport) -> float:
    return r.before - r.after if r.metric == "accuracy" else r.after / r.before


def _target(r: CompressionReport, task: str) -> str:
    if r.metric == "accuracy":
        ok = r.before - r.after <= 0.01 and r.ratio >= 50
        return "yes" if ok else "no"
    ok = r.after <= 1.1 * r.before and r.ratio >= 80
    return "yes" if ok else "no"


def run_row(row: Row, ks: list[int], seed: int) -> list[dict[str, Any]]:
    data = load_dataset(row.data, seed=seed)
    torch.manual_seed(seed)
    model = build_model_for(data, row.family, row.widths, **row.options)
    t0 = time.perf_counter()
    train_model(model, data, epochs=row.epochs, lr=row.lr, seed=seed)
    t_train = time.perf_counter() - t0
    metric, value = evaluate(model, data)
    cfg = MetaClusterConfig(k=ks, seed=seed, device="cpu", max_drop=0.01, **row.config)
    out: list[dict[str, Any]] = []
    name = f"{row.data} {row.family} {','.join(map(str, row.widths))}"

    def record(method: str, report: CompressionReport) -> None:
        out.append(
            {
                "model": name,
                "method": method,
                "train_s": round(t_train, 1),
                "trained": value,
                **report.to_dict(),
            }
        )

    sizer = ArtifactSizer()  # real bytes: the artifact each result would be written as
    _, mc = compress(model, cfg, data, sizer=sizer)
    for sweep in mc.sweep or [mc.to_dict()]:
        rep = CompressionReport(**{**mc.to_dict(), **sweep, "sweep": [], "layers": []})
        record("metacluster", rep)
    _, km = compress(model, cfg.replace(method="kmeans"), data, sizer=sizer)
    for sweep in km.sweep or [km.to_dict()]:
        record("kmeans", CompressionReport(**{**km.to_dict(), **sweep, "sweep": [], "layers": []}))
    coef_dim = next(layer.coef_dim for _, layer in model.kan_layers())
    k_ref = 16 if 16 in ks else ks[-1]
    bits_ref = math.ceil(math.log2(k_ref))
    m = _pq_m(coef_dim)
    single = cfg.replace(k=k_ref)
    baselines: tuple[tuple[str, dict[str, int]], ...] = (
        ("scalar", {"bits": 1}),
        ("pq", {"m": m, "bits": max(1, round(bits_ref / m))}),
        ("int4", {}),
        ("int8", {}),
    )
    for method, kwargs in baselines:
        _, rep = compress(
            model, single.replace(method=method, method_options=kwargs), data, sizer=sizer
        )
        record(
            f"{method}"
            + (
                f" m={m} b={kwargs['bits']}"
                if method == "pq"
                else f" b={kwargs['bits']}"
                if method == "scalar"
                else ""
            ),
            rep,
        )
    print(
        f"[{name}] {metric} {value:.4f}: MC K={k_ref} -> "
        f"{next(r['after'] for r in out if r['method'] == 'metacluster' and r['k'] == k_ref):.4f}",
        file=sys.stderr,
        flush=True,
    )
    return out


def table(results: list[dict[str, Any]]) -> str:
    headers = [
        "model",
        "method",
        "K",
        "metric",
        "before",
        "after",
        "MC-KM",
        "bytes before",
        "bytes after",
        "ratio",
        "param ratio",
        "meta s",
        "soft s",
        "kmeans s",
        "finetune s",
        "target",
    ]
    km_after = {(r["model"], r["k"]): r["after"] for r in results if r["method"] == "kmeans"}
    rows = []
    for r in results:
        if r["method"] == "metacluster":
            kma = km_after.get((r["model"], r["k"]))
            diff = r["after"] - kma if kma is not None else float("nan")
            if r["metric"] == "rmse":
                diff = -diff  # positive = MetaCluster better
        else:
            diff = float("nan")
        rep = CompressionReport(
            **{k: r[k] for k in CompressionReport.__dataclass_fields__ if k in r}
        )
        stages = r["stages"]
        rows.append(
            [
                r["model"],
                r["method"],
                r["k"],
                r["metric"],
                round(r["before"], 4),
                round(r["after"], 4),
                "" if math.isnan(diff) else f"{diff:+.4f}",
                r["bytes_before"],
                r["bytes_after"],
                round(r["ratio"], 1),
                round(r["param_ratio"], 1),
                stages.get("meta", ""),
                stages.get("soft", ""),
                stages.get("kmeans", stages.get("quantize", "")),
                stages.get("finetune", ""),
                _target(rep, "") if r["method"] == "metacluster" and r["k"] == 16 else "",
            ]
        )
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to update")
    parser.add_argument("--json", type=Path, default=None, help="also dump every report here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="run rows whose data name contains this")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only re-render the table from a --json dump of an earlier run",
    )
    parser.add_argument("--minutes", type=float, default=None, help="run time to state (--render)")
    args = parser.parse_args(argv)
    if args.render is not None:
        args.json = None
        _write(args, json.loads(args.render.read_text()), 60 * (args.minutes or 0.0), done=True)
        return
    torch.set_num_threads(args.threads)
    rows = QUICK_ROWS if args.quick else FULL_ROWS
    rows = [r for r in rows if args.only in r.data]
    ks = QUICK_KS if args.quick else FULL_KS
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        results.extend(run_row(row, ks, seed=0))
        # rewrite the section after every model, so a long run leaves its rows behind
        _write(args, results, time.perf_counter() - t0, done=i + 1 == len(rows))


def _write(
    args: argparse.Namespace, results: list[dict[str, Any]], elapsed: float, done: bool
) -> None:
    state = "" if done else " PARTIAL (still running)"
    header = (
        f"Compression (CPU, {args.threads} torch threads, seed 0, {'quick' if args.quick else 'full'}"
        f" run{state}, {elapsed / 60:.1f} min). bytes = real file sizes: fp32 source checkpoint vs"
        " artifact; ratio = before/after; param ratio = the paper's bit count. Baselines use the"
        " same artifact writer at the K=16 budget (scalar b=1 and PQ are the settings closest to"
        " it; their K column is centroids per codebook: scalar 2, PQ with m=3 (L=9) b=1 -> 2,"
        " m=2 (L=4 or 14) b=2 -> 4). MC-KM = MetaCluster minus plain K-means at equal K (positive = MetaCluster better)."
        " target (K=16 rows): classification within 1.0 point and ratio >= 50; regression"
        " RMSE <= 1.1x and ratio >= 80.\n\n"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    write_section("compression", header + table(results), path=args.results)


if __name__ == "__main__":
    main()
