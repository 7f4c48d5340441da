"""How the cost of one compression grows with the model: wall time and peak memory of a
K=16 run against edge count (about 1e4, 1e5 and 1e6 edges).

Each size runs in a fresh process (so its peak resident memory is its own): a B-spline
KAN [d, d, 10] with d*d + 10*d edges, synthetic classification data of the right shape
(inputs N(0, 1), labels of a fixed random linear teacher; 2048 training and 512 test
samples), trained for one epoch, then compressed through `metacluster.workflow.
compress_file` with a short recipe (2 meta epochs, 2 soft epochs, 1 fine-tuning epoch).

    python benchmarks/scaling.py              # 1e4, 1e5, 1e6 edges
    python benchmarks/scaling.py --sizes 100  # one d (the test suite runs a tiny one)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._results import RESULTS, markdown_table, write_section  # noqa: E402

DEFAULT_SIZES = [100, 316, 1000]
RECIPE = {
    "k": 16,
    "regress_steps": 50,
    "meta_epochs": 2,
    "soft_epochs": 2,
    "soft_min_steps": 0,  # a few epochs, as the issue asks
    "finetune_epochs": 1,
    "kmeans_restarts": 1,
    "kmeans_iters": 20,
    "baselines": False,
    "device": "cpu",
}


def one_size(d: int, threads: int) -> dict[str, Any]:
    """Runs in the child process: build, train briefly, compress, measure."""
    import numpy as np
    import torch

    from metacluster.compress import MetaClusterConfig
    from metacluster.data import load_dataset
    from metacluster.formats import save_model
    from metacluster.training import build_model_for, train_model
    from metacluster.workflow import compress_file

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(d, 10))
    x = rng.normal(size=(2560, d)).astype(np.float32)
    y = (x @ teacher).argmax(1)
    with tempfile.TemporaryDirectory(prefix="mc-scale-") as tmp:
        data_path = Path(tmp) / "data.npz"
        np.savez(data_path, x_train=x[:2048], y_train=y[:2048], x_test=x[2048:], y_test=y[2048:])
        data = load_dataset(str(data_path))
        torch.manual_seed(0)
        model = build_model_for(data, "bspline", [d, d, 10])
        train_model(model, data, epochs=1, batch_size=256)
        save_model(model, Path(tmp) / "model.safetensors")
        del model
        t0 = time.perf_counter()
        report = compress_file(
            Path(tmp) / "model.safetensors",
            data,
            MetaClusterConfig(**RECIPE),
            Path(tmp) / "model.mcz",
        )
        wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "d": d,
        "edges": d * d + 10 * d,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_kib / 1024),
        "stages": report.stages,
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "ratio": round(report.ratio, 1),
        "before": report.before,
        "after": report.after,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=DEFAULT_SIZES, help="values of d")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one_size(args.child, args.threads)))
        return
    rows = []
    for d in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(d), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"d={d} failed: {proc.stderr.strip()[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"[scaling] {rows[-1]}", file=sys.stderr, flush=True)
    headers = [
        "edges", "KAN", "wall s", "peak RSS MiB", "meta s", "soft s", "kmeans s", "finetune s",
        "artifact s", "bytes before -> after", "ratio",
    ]  # fmt: skip
    table = [
        [
            f"{r['edges']:,}", f"[{r['d']}, {r['d']}, 10]", r["wall_s"], r["peak_rss_mib"],
            r["stages"].get("meta"), r["stages"].get("soft"), r["stages"].get("kmeans"),
            r["stages"].get("finetune"), r["stages"].get("artifact"),
            f"{r['bytes_before']:,} -> {r['bytes_after']:,}", r["ratio"],
        ]
        for r in rows
    ]  # fmt: skip
    write_section(
        "scaling",
        f"One K=16 compression against edge count (CPU, {args.threads} torch threads; a fresh "
        "process per size; synthetic data: 2048 train / 512 test samples; recipe: "
        f"{json.dumps(RECIPE)}). Target: 1e6 edges within 10 minutes and 8 GB.\n\n"
        + markdown_table(headers, table),
        path=args.results,
    )


if __name__ == "__main__":
    main()
