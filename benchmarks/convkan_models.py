"""ConvKAN classifiers for real MNIST 28x28, built and trained with torch-conv-kan's own code.

The conv layers are the upstream classes themselves: `KANConv2DLayer`
(kan_convs/kan_conv.py) and `FastKANConv2DLayer` (kan_convs/fast_kan_conv.py), vendored
byte for byte under tests/formats/reference/torch_conv_kan_upstream. The model is what a
user writes around them (the shape of upstream's own `SimpleConvKAN`: KAN convs, pooling,
a plain `nn.Linear` head), saved as its state dict, with the JSON spec that tells
MetaCluster how the wrapper runs (`convkan.pt.spec.json` beside it, docs/formats.md):

    conv1: <Layer>(1, 16, 3) -> MaxPool2d(2)          28 -> 26 -> 13
    conv2: <Layer>(16, 32, 3) -> MaxPool2d(2)         13 -> 11 -> 5
    MaxPool2d(2) -> flatten -> head: Linear(128, 10)  5 -> 2

Training follows upstream's mnist_conv.py: AdamW (weight decay 1e-5), ExponentialLR
(gamma 0.975) per epoch, cross-entropy, inputs normalized to [-1, 1]; on a 2-core CPU
host with lr 1e-3 instead of its 1e-4, batch 64, no augmentation, a few epochs on a
fixed training subset (the source's data spec, "mnist:N").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import benchmarks.sources as sources
from metacluster.data import Dataset, load_dataset

UPSTREAM = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "formats"
    / "reference"
    / "torch_conv_kan_upstream"
)
LIBRARY = "torch-conv-kan-mnist"
SIDE = 28


def upstream_layer(kind: str) -> type[nn.Module]:
    """The vendored upstream conv class: "kan" (KANConv2DLayer) or "fastkan"."""
    if str(UPSTREAM) not in sys.path:  # upstream imports `kans` by top-level name
        sys.path.insert(0, str(UPSTREAM))
    if kind == "kan":
        from kan_convs.kan_conv import KANConv2DLayer  # type: ignore[import-not-found]

        return KANConv2DLayer  # type: ignore[no-any-return]
    if kind == "fastkan":
        from kan_convs.fast_kan_conv import FastKANConv2DLayer  # type: ignore[import-not-found]

        return FastKANConv2DLayer  # type: ignore[no-any-return]
    raise ValueError(f"unknown torch-conv-kan layer {kind!r}")


class ConvKANNet(nn.Module):
    """Two upstream KAN convs with max pooling and a Linear head (see the module doc)."""

    def __init__(
        self, kind: str, channels: tuple[int, int] = (16, 32), classes: int = 10, side: int = SIDE
    ) -> None:
        super().__init__()
        layer = upstream_layer(kind)
        self.side = side
        self.conv1 = layer(1, channels[0], 3)
        self.conv2 = layer(channels[0], channels[1], 3)
        cells = (((side - 2) // 2 - 2) // 2) // 2
        self.head = nn.Linear(channels[1] * cells * cells, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, self.side, self.side)
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.max_pool2d(x, 2).flatten(1)
        return self.head(x)  # type: ignore[no-any-return]


def spec(side: int = SIDE) -> dict[str, Any]:
    """The JSON spec of ConvKANNet's state dict (padding 0, stride 1: the layers' defaults)."""
    pool = {"kind": "maxpool2d", "options": {"kernel_size": 2}}
    return {
        "layers": [
            {"kind": "reshape", "options": {"shape": [1, side, side]}},
            {"kind": "torch-conv-kan", "prefix": "conv1."},
            pool,
            {"kind": "torch-conv-kan", "prefix": "conv2."},
            pool,
            pool,
            {"kind": "flatten"},
            {"kind": "linear", "prefix": "head."},
        ]
    }


def optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """mnist_conv.py's optimizer (AdamW, weight decay 1e-5) at the row's learning rate."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)


def epoch(model: nn.Module, data: Dataset, opt: torch.optim.Optimizer, seed: int) -> None:
    """One epoch of mnist_conv.py's Trainer.train_epoch (fp32 on CPU, no penalties):
    shuffled batches of 64, cross-entropy, one optimizer step per batch."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(data.n_train, generator=gen)
    model.train()
    for i in range(0, data.n_train, 64):
        idx = perm[i : i + 64]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.eval()


def accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        hits = sum(
            int((model(data.x_test[i : i + 500]).argmax(1) == data.y_test[i : i + 500]).sum())
            for i in range(0, data.n_test, 500)
        )
    return hits / data.n_test


def _build(src: sources.Source, data: Dataset, out: Path) -> Path:
    model = ConvKANNet(str(src.options["layer"]), (src.widths[0], src.widths[1]), src.widths[2])
    opt = optimizer(model, src.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.975)
    log = []
    for e in range(src.epochs):
        t0 = time.perf_counter()
        epoch(model, data, opt, seed=e)
        sched.step()
        log.append({"epoch": e + 1, "s": round(time.perf_counter() - t0, 1)})
        print(f"[{LIBRARY} {src.options['layer']}] epoch {log[-1]}", file=sys.stderr, flush=True)
    path = out / "convkan.pt"
    torch.save(model.state_dict(), path)
    (out / "convkan.pt.spec.json").write_text(json.dumps(spec()))
    (out / "train.json").write_text(json.dumps({"epochs": log, "accuracy": accuracy(model, data)}))
    return path


def epoch_seconds(path: Path, src: sources.Source, data: str) -> float:
    """One training epoch of the dense model with the same recipe on the same data, timed."""
    model = ConvKANNet(str(src.options["layer"]), (src.widths[0], src.widths[1]), src.widths[2])
    model.load_state_dict(torch.load(path, weights_only=True))
    dataset = load_dataset(data)
    opt = optimizer(model, src.lr)
    t0 = time.perf_counter()
    epoch(model, dataset, opt, seed=0)
    return time.perf_counter() - t0


def write_section_conv(args: Any, table: str, took: str) -> None:
    """RESULTS.md's compression_mnist_conv section (benchmarks/compression.py --conv)."""
    from benchmarks._results import write_section

    write_section(
        "compression_mnist_conv",
        f"ConvKAN on real MNIST 28x28 ({args.threads} torch threads, CPU; last invocation {took}; "
        f"{args.host_note}). Models: benchmarks/convkan_models.py - torch-conv-kan's own "
        "`KANConv2DLayer` / `FastKANConv2DLayer` (vendored verbatim), 1->16 k3, MaxPool2d(2), "
        "16->32 k3, MaxPool2d(2), MaxPool2d(2), flatten, `nn.Linear(128, 10)` head; saved as a "
        "state dict with its JSON spec. Trained with upstream mnist_conv.py's recipe (AdamW, "
        "weight decay 1e-5, ExponentialLR 0.975, cross-entropy) at lr 1e-3, batch 64, no "
        "augmentation, 5 epochs on the first 12,000 training images (a 2-core host); tested "
        "on the full 10,000 test images; the compression's data is the same 12k subset, and "
        "'epoch s' is one training epoch of the same model on those 12k, timed in the same "
        "run just before its compression. The compression runs as `metacluster compress "
        "MODEL --data mnist-12000.npz --target-ratio 20 --json` in a child process (its own "
        "peak RSS); the Linear head and the PReLU slopes stay dense fp32 and are counted in "
        "the file's bytes.\n\n"
        "    python benchmarks/compression.py --mnist PATH/mnist.npz --conv --threads 1 "
        "--json benchmarks/compression_mnist_conv.json [--only ROW --merge]\n\n" + table,
        path=args.results,
    )


sources.BUILDERS[LIBRARY] = _build

__all__ = [
    "LIBRARY",
    "ConvKANNet",
    "accuracy",
    "epoch",
    "epoch_seconds",
    "optimizer",
    "spec",
    "write_section_conv",
]
