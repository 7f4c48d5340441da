"""Benchmark: inference of a K=16 artifact, dense vs codebook domain vs peers (CPU, 1 thread).

For MNIST-shaped B-spline KANs 784-64-10 and 784-256-10 (G=5, k=3), compressed by our
engine (method kmeans, K=16), times one forward at batch 1 and 256 of:

- dense ours: `load_artifact(path)` (every edge vector rebuilt, our B-spline layer);
- efficient-kan math: efficient-kan's KANLinear forward (benchmarks/kan_layers.py)
  holding the same functions;
- flashkan 0.2.0: its KANLayer (torch.compile'd truncated-power basis), same functions;
- compressed: `load_artifact(path, runtime="compressed")`;
- onnxruntime: the exported codebook graph (`metacluster export --to onnx`), 1 thread.

Timing: thread CPU time of the calling thread (1 torch / ORT thread), median of
interleaved runs. Resident weight bytes: the parameters and buffers a contender holds
(ONNX: the graph's initializers and constants). Peak RSS: a fresh child process that
imports, loads the contender and runs it (ru_maxrss).

Run `python benchmarks/inference.py --mnist PATH` (MNIST .npz with x_train, y_train,
x_test, y_test; env METACLUSTER_MNIST) to train each model first (efficient-kan's own
recipe, `--epochs` epochs, default 1: AdamW 1e-3, batch 64); without it
the models are random-init and compressed on random inputs. `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import markdown_table, write_section
from benchmarks.kan_layers import EfficientKANReference
from metacluster.artifact import load_artifact, write_artifact
from metacluster.compress import MetaClusterConfig, compress
from metacluster.data import Dataset, load_dataset
from metacluster.kan import build_kan
from metacluster.kan.model import KANModel
from metacluster.runtime import resident_bytes

CONTENDERS = ("dense ours", "efficient-kan math", "flashkan 0.2.0", "compressed", "onnxruntime")
K = 16


def _random_data(n: int = 2048, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=gen)
    return Dataset("random", "classification", x, y, x[:512], y[:512], 10, (784,))


def make_artifact(hidden: int, mnist: str | None, epochs: int, out: Path) -> dict[str, Any]:
    """Build (train) and compress one model with our engine at K=16; returns its facts."""
    torch.manual_seed(0)
    model = build_kan("bspline", [784, hidden, 10])
    model.meta["task"] = "classification"
    data = load_dataset(mnist) if mnist else _random_data()
    if mnist and epochs:  # efficient-kan's own MNIST recipe (benchmarks/sources.py)
        from benchmarks.sources import upstream_epoch, upstream_optimizer

        opt = upstream_optimizer(model)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)
        for epoch in range(epochs):
            upstream_epoch(model, data, opt, epoch)
            sched.step()
    start = time.perf_counter()
    config = MetaClusterConfig(method="kmeans", k=K, device="cpu", baselines=False)
    compressed, report = compress(model, config, data)
    info = write_artifact(compressed, out, report)
    return {
        "data": "MNIST" if mnist else "random",
        "compress_s": time.perf_counter() - start,
        "bytes": info.bytes,
        "before": report.before,
        "after": report.after,
    }


class _EfficientKANStack(nn.Module):
    """efficient-kan's KANLinear forward per layer, holding the artifact's functions."""

    def __init__(self, dense: KANModel) -> None:
        super().__init__()
        layers = []
        for _, layer in dense.kan_layers():
            ref = EfficientKANReference(layer.in_features, layer.out_features)
            with torch.no_grad():
                ref.grid.copy_(layer.grid)
                ref.spline_weight.copy_(layer.coef[..., :-1])
                ref.spline_scaler.fill_(1.0)
                ref.base_weight.copy_(layer.coef[..., -1])
            layers.append(ref)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _flashkan_stack(dense: KANModel) -> nn.Module:
    from flashkan import KANLayer

    layers = []
    for _, layer in dense.kan_layers():
        fk = KANLayer(layer.in_features, layer.out_features)
        with torch.no_grad():
            fk.spline_weight.copy_(layer.coef[..., :-1])
            fk.base_weight.copy_(layer.coef[..., -1])
        layers.append(fk)
    return nn.Sequential(*layers)


class _OrtModel:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.numpy()})[0])


def _onnx_bytes(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path)).graph
    tensors = list(graph.initializer)
    tensors += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    return sum(len(t.raw_data) or t.ByteSize() for t in tensors)


def load_contender(name: str, artifact: Path, onnx_path: Path) -> tuple[Callable[..., Any], int]:
    """(callable, resident weight bytes) of one contender."""
    if name == "onnxruntime":
        return _OrtModel(onnx_path), _onnx_bytes(onnx_path)
    if name == "compressed":
        fast = load_artifact(artifact, runtime="compressed")
        return fast, resident_bytes(fast)
    dense = load_artifact(artifact).eval()
    model: nn.Module = dense
    if name == "efficient-kan math":
        model = _EfficientKANStack(dense).eval()
    elif name == "flashkan 0.2.0":
        model = _flashkan_stack(dense).eval()
    return model, resident_bytes(model)


def _median_ms(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Median thread-CPU ms of each function, runs interleaved after warm-up."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.thread_time()
            fn()
            times[name].append((time.thread_time() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _no_grad_call(fn: Callable[..., Any], x: Tensor) -> Callable[[], object]:
    def go() -> object:
        with torch.no_grad():
            return fn(x)

    return go


def peak_rss_mb(name: str, artifact: Path, onnx_path: Path, batch: int) -> float:
    """Peak RSS (MiB) of a fresh process that loads `name` and runs one batch."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, str(artifact), str(onnx_path), str(batch)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: peak so far


def _child(name: str, artifact: str, onnx_path: str, batch: str) -> None:
    """Peak RSS while loading and running one contender, after every import: the
    high-water mark is reset (/proc/self/clear_refs) once the libraries are in."""
    torch.set_num_threads(1)
    x = torch.rand(int(batch), 784) * 2 - 1
    import flashkan  # noqa: F401  (every child imports the same libraries first)
    import onnxruntime  # noqa: F401

    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        clear.write_text("5")
    fn, _ = load_contender(name, Path(artifact), Path(onnx_path))
    with torch.no_grad():
        fn(x)
    print(json.dumps({"rss_mb": _vm_kb("VmHWM") / 1024}))


def run(hidden_sizes: list[int], batches: list[int], repeats: int, args: Any) -> list[list[Any]]:
    from metacluster.runtime.onnx_export import export_onnx

    rows: list[list[Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="mc-inference-"))
    for hidden in hidden_sizes:
        artifact = tmp / f"m{hidden}.mcz"
        facts = make_artifact(hidden, args.mnist, args.epochs, artifact)
        FACTS[f"784-{hidden}-10"] = facts
        print(f"784-{hidden}-10: {facts}", file=sys.stderr)
        onnx_path = tmp / f"m{hidden}.onnx"
        export_onnx(load_artifact(artifact, runtime="compressed"), onnx_path)
        loaded = {name: load_contender(name, artifact, onnx_path) for name in CONTENDERS}
        dense_bytes = loaded["dense ours"][1]
        for batch in batches:
            x = torch.rand(batch, 784, generator=torch.Generator().manual_seed(batch)) * 2 - 1
            with torch.no_grad():
                ref = loaded["dense ours"][0](x)
                diffs = {
                    n: float((fn(x) - ref).abs().max()) / float(ref.abs().max())
                    for n, (fn, _) in loaded.items()
                }

            ms = _median_ms({n: _no_grad_call(fn, x) for n, (fn, _) in loaded.items()}, repeats)
            load = os.getloadavg()[0]
            for name in CONTENDERS:
                rss = peak_rss_mb(name, artifact, onnx_path, batch) if args.rss else float("nan")
                rows.append(
                    [
                        f"784-{hidden}-10",
                        batch,
                        name,
                        round(ms[name], 3),
                        f"{ms['dense ours'] / ms[name]:.2f}x",
                        loaded[name][1],
                        f"{dense_bytes / loaded[name][1]:.1f}x",
                        round(rss, 1),
                        f"{diffs[name]:.1e}",
                        f"{load:.1f}",
                    ]
                )
                print(" | ".join(str(v) for v in rows[-1]), file=sys.stderr)
    return rows


FACTS: dict[str, dict[str, Any]] = {}

HEADERS = [
    "model (K=16)",
    "batch",
    "runtime",
    "ms / forward",
    "speed vs dense ours",
    "weight bytes resident",
    "fewer bytes than dense",
    "peak RSS MiB",
    "max rel diff vs dense",
    "load avg",
]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mnist", default=os.environ.get("METACLUSTER_MNIST"))
    parser.add_argument("--epochs", type=int, default=1, help="training epochs with --mnist")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-rss", dest="rss", action="store_false")
    parser.add_argument("--quick", action="store_true", help="784-64-10, few runs, no RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        rows = run([64], [1, 8], 3, args)
    else:
        rows = run([64, 256], [1, 256], args.repeats, args)
    table = markdown_table(HEADERS, rows)
    print(table)
    if not args.quick:
        data = "MNIST (trained 1 epoch)" if args.mnist else "random-init weights"
        note = (
            f"\n\nB-spline KANs (G=5, k=3), {data}, compressed by our engine (method kmeans, "
            f"K={K}). CPU ({os.cpu_count()} cores shared with other work; `load avg` is the "
            "1-minute load when the row was timed), 1 torch / onnxruntime thread, thread CPU "
            f"time of one forward, median of {args.repeats} interleaved runs after warm-up. "
            "`weight bytes resident`: parameters and buffers held (ONNX: initializers and "
            "constants of the graph); `peak RSS`: a fresh process that loads the contender "
            "and runs one batch (torch's own ~300 MiB included). efficient-kan math and "
            "flashkan hold the artifact's functions in their own layers. "
            "compressed: the fused C kernel (docs/runtime.md); dense ours: our B-spline "
            "layer with its C features and oneDNN product. "
            f"torch {torch.__version__}."
        )
        if args.mnist:
            accuracy = "; ".join(
                f"{name}: test accuracy {f['before']:.4f} dense -> {f['after']:.4f} at K={K}, "
                f"{f['bytes']} artifact bytes"
                for name, f in FACTS.items()
            )
            note += f" Models: {accuracy}."
        write_section("inference", "## Inference: codebook runtime vs dense\n\n" + table + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
