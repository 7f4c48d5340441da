"""Benchmark checkpoints written by the upstream libraries' own code, as users have them.

- efficient-kan: `KAN(...)` of Blealtan/efficient-kan (the faithful copy in
  tests/formats/reference/efficient_kan.py: the same float32 grid arithmetic
  `arange(-k, G+k+1) * h + lo`, Cox-de Boor forward; its forward matches upstream's
  src/efficient_kan/kan.py at 7b6ce1c bit for bit on the same state dict), trained with
  a plain AdamW loop and saved with `torch.save(model.state_dict())`; on real MNIST with
  upstream's own examples/mnist.py recipe (`upstream_recipe`);
- pykan: the installed pykan 0.2.8 `KAN(...)`, trained with its own `model.fit(...)`
  with grid updates on, saved with `model.saveckpt(...)`;
- torch-conv-kan: two `KANConv2DLayer`s (tests/formats/reference/torch_conv_kan.py),
  max pooling, global average pooling and a Linear head in the user's own wrapper,
  read through a JSON spec.

Every source is cached under benchmarks/.cache (by its settings), so a re-run
compresses the same checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
REFERENCE = ROOT / "tests" / "formats"
if str(REFERENCE) not in sys.path:
    sys.path.insert(0, str(REFERENCE))

from reference.efficient_kan import KAN as EfficientKAN  # noqa: E402
from reference.torch_conv_kan import KANConv2DLayer  # noqa: E402

from metacluster.data import Dataset, load_dataset  # noqa: E402


@dataclass(frozen=True)
class Source:
    """How to make one benchmark checkpoint."""

    library: str  # efficient-kan | pykan | torch-conv-kan
    # a built-in name, "wine" (scikit-learn's bundled wine, as an .npz), or "mnist" (real
    # MNIST: the .npz that `MNIST_PATH` names, with an optional ":N" training subsample)
    data: str
    widths: tuple[int, ...]
    epochs: int
    lr: float = 1e-2
    options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"{self.library}-{hashlib.sha1(blob).hexdigest()[:10]}"


# Real MNIST (x_train (60000, 784) float32 in [-1, 1], y_train, x_test, y_test): the
# benchmark's --mnist argument or the METACLUSTER_MNIST environment variable sets it.
MNIST_PATH = os.environ.get("METACLUSTER_MNIST", "mnist.npz")


def data_path(name: str) -> str:
    """A data spec `load_dataset` reads: a built-in, or a cached .npz (wine, MNIST subsets)."""
    if name.startswith("mnist") and not name.startswith("mnist1d"):
        return _mnist(name)
    if name != "wine":
        return name
    path = CACHE / "wine.npz"
    if not path.exists():
        from sklearn.datasets import load_wine
        from sklearn.model_selection import train_test_split

        x, y = load_wine(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            x_train=xtr.astype(np.float32),
            y_train=ytr.astype(np.int64),
            x_test=xte.astype(np.float32),
            y_test=yte.astype(np.int64),
        )
    return str(path)


def _mnist(name: str) -> str:
    """Real MNIST from MNIST_PATH; "mnist:N": its first N training samples (same test set)."""
    if not Path(MNIST_PATH).exists():
        raise SystemExit(f"real MNIST not found at {MNIST_PATH!r}: pass --mnist PATH")
    if ":" not in name:
        return str(Path(MNIST_PATH).resolve())
    n = int(name.split(":", 1)[1])
    path = CACHE / f"mnist-{n}.npz"
    if not path.exists():
        with np.load(MNIST_PATH) as full:
            arrays = {k: full[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][:n], arrays["y_train"][:n]
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return str(path)


def _loss(out: torch.Tensor, y: torch.Tensor, data: Dataset) -> torch.Tensor:
    if data.task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y)


def _train(model: nn.Module, data: Dataset, epochs: int, lr: float, seed: int = 0) -> None:
    """What a user of these libraries writes: AdamW, cosine schedule, minibatches of 64."""
    x = data.x_train
    steps = epochs * ((data.n_train + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(data.n_train, generator=gen)
        for i in range(0, data.n_train, 64):
            idx = perm[i : i + 64]
            loss = _loss(model(x[idx]), data.y_train[idx], data)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
    model.eval()


def upstream_epoch(model: nn.Module, data: Dataset, opt: torch.optim.Optimizer, seed: int) -> None:
    """One epoch of efficient-kan's examples/mnist.py: shuffled batches of 64, CrossEntropy,
    AdamW step per batch (the caller steps ExponentialLR(0.8) after the epoch)."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(data.n_train, generator=gen)
    model.train()
    for i in range(0, data.n_train, 64):
        idx = perm[i : i + 64]
        loss = F.cross_entropy(model(data.x_train[idx].reshape(len(idx), -1)), data.y_train[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.eval()


def upstream_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """examples/mnist.py's optimizer: AdamW(lr=1e-3, weight_decay=1e-4)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)


def _upstream_recipe(model: nn.Module, data: Dataset, epochs: int) -> None:
    """efficient-kan's own MNIST recipe (inputs already in [-1, 1], as its Normalize(0.5,
    0.5) makes them): AdamW 1e-3, ExponentialLR(gamma=0.8) per epoch, batch 64."""
    opt = upstream_optimizer(model)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)
    for epoch in range(epochs):
        upstream_epoch(model, data, opt, epoch)
        sched.step()


def _efficient_kan(src: Source, data: Dataset, out: Path) -> Path:
    lo = float(src.options.get("grid_bound", 1.0))
    model = EfficientKAN(
        list(src.widths), grid_size=int(src.options.get("grid_size", 5)), grid_range=[-lo, lo]
    )
    if src.options.get("recipe") == "upstream":
        _upstream_recipe(model, data, src.epochs)
    else:
        _train(model, data, src.epochs, src.lr)
    path = out / "model.pt"
    torch.save(model.state_dict(), path)
    return path


class ConvKANClassifier(nn.Module):
    """A user's own conv KAN for 8x8 images: two torch-conv-kan layers, pooling, a head."""

    def __init__(self, channels: tuple[int, int], classes: int) -> None:
        super().__init__()
        self.conv1 = KANConv2DLayer(1, channels[0], 3, padding=1)
        self.conv2 = KANConv2DLayer(channels[0], channels[1], 3, padding=1)
        self.head = nn.Linear(channels[1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, 8, 8)
        x = F.max_pool2d(self.conv1(x), 2)
        x = self.conv2(x).mean(dim=(2, 3))
        return self.head(x)  # type: ignore[no-any-return]


CONV_SPEC = {
    "layers": [
        {"kind": "reshape", "options": {"shape": [1, 8, 8]}},
        {"kind": "torch-conv-kan", "prefix": "conv1.", "options": {"padding": 1}},
        {"kind": "maxpool2d", "options": {"kernel_size": 2}},
        {"kind": "torch-conv-kan", "prefix": "conv2.", "options": {"padding": 1}},
        {"kind": "global_avg_pool"},
        {"kind": "linear", "prefix": "head."},
    ]
}


def _torch_conv_kan(src: Source, data: Dataset, out: Path) -> Path:
    model = ConvKANClassifier((src.widths[0], src.widths[1]), src.widths[2])
    _train(model, data, src.epochs, src.lr)
    path = out / "convkan.pt"
    torch.save(model.state_dict(), path)
    (out / "convkan.pt.spec.json").write_text(json.dumps(CONV_SPEC))
    return path


def _pykan(src: Source, data: Dataset, out: Path) -> Path:
    import kan

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = kan.KAN(
            width=list(src.widths),
            grid=int(src.options.get("grid", 3)),
            k=3,
            seed=0,
            auto_save=False,
            ckpt_path=str(out),
        )
        dataset = {
            "train_input": data.x_train,
            "train_label": data.y_train,
            "test_input": data.x_test,
            "test_label": data.y_test,
        }
        loss_fn = nn.CrossEntropyLoss() if data.task == "classification" else None
        model.fit(
            dataset,
            opt="Adam",
            lr=src.lr,
            steps=src.epochs,
            update_grid=True,
            grid_update_num=int(src.options.get("grid_update_num", 10)),
            loss_fn=loss_fn,
        )
        model.saveckpt(str(out / "model"))
    return out / "model"


BUILDERS: dict[str, Callable[[Source, Dataset, Path], Path]] = {
    "efficient-kan": _efficient_kan,
    "pykan": _pykan,
    "torch-conv-kan": _torch_conv_kan,
}


def build(src: Source) -> tuple[Path, str]:
    """(checkpoint path, data spec) of the source, built once and cached."""
    folder = CACHE / src.key()
    data_spec = data_path(src.data)
    done = folder / "done.json"
    if done.exists():
        return Path(json.loads(done.read_text())["path"]), data_spec
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path = BUILDERS[src.library](src, load_dataset(data_spec), folder)
    done.write_text(json.dumps({"path": str(path), "source": asdict(src)}))
    return path, data_spec


__all__ = [
    "CONV_SPEC",
    "MNIST_PATH",
    "Source",
    "build",
    "data_path",
    "upstream_epoch",
    "upstream_optimizer",
]
