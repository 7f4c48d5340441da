"""A torch-conv-kan classifier as users write it - upstream `KANConv2DLayer`s (vendored
verbatim in reference/torch_conv_kan_upstream), max pooling, flatten and a plain
`nn.Linear` head, saved as its state dict with a JSON spec - through compress ->
artifact -> load (the MNIST ConvKAN benchmark's path, benchmarks/convkan_models.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from kan_convs.kan_conv import KANConv2DLayer
from torch import nn

from metacluster.artifact import load_artifact, read_manifest, write_artifact
from metacluster.compress import MetaClusterConfig, compress
from metacluster.data import load_dataset
from metacluster.formats import inspect_model, load_model

SPEC: dict[str, Any] = {
    "layers": [
        {"kind": "reshape", "options": {"shape": [1, 8, 8]}},
        {"kind": "torch-conv-kan", "prefix": "conv1.", "options": {"padding": 1}},
        {"kind": "maxpool2d", "options": {"kernel_size": 2}},
        {"kind": "torch-conv-kan", "prefix": "conv2.", "options": {"padding": 1}},
        {"kind": "maxpool2d", "options": {"kernel_size": 2}},
        {"kind": "flatten"},
        {"kind": "linear", "prefix": "head."},
    ]
}
FAST = {
    "regress_steps": 10,
    "meta_epochs": 1,
    "soft_epochs": 1,
    "soft_min_steps": 0,
    "finetune_epochs": 1,
    "kmeans_iters": 5,
    "kmeans_restarts": 1,
    "device": "cpu",
    "baselines": False,
}


class Net(nn.Module):
    """8x8 -> KANConv 1->2 -> pool -> KANConv 2->2 -> pool -> flatten (8) -> Linear(8, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = KANConv2DLayer(1, 2, 3, padding=1)
        self.conv2 = KANConv2DLayer(2, 2, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x.reshape(-1, 1, 8, 8)), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.head(x.flatten(1))  # type: ignore[no-any-return]


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, Net]:
    torch.manual_seed(0)
    net = Net().eval()  # untrained: upstream's own initialisation
    path = tmp_path / "convkan.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "convkan.pt.spec.json").write_text(json.dumps(SPEC))
    return path, net


def _x() -> torch.Tensor:
    return load_dataset("digits").x_test[:64]


def test_spec_reads_the_upstream_classifier(checkpoint: tuple[Path, Net]) -> None:
    path, net = checkpoint
    model = load_model(path)  # the spec beside the file is found
    x = _x()
    with torch.no_grad():
        assert float((model(x) - net(x)).abs().max()) <= 1e-5
    info = inspect_model(path)
    assert info["format"] == "spec"
    # every float of the state dict is counted: both conv layers, PReLUs and the head
    assert info["params"] == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("method", ["metacluster", "kmeans"])
def test_compress_artifact_load_gives_the_compressed_outputs(
    checkpoint: tuple[Path, Net], tmp_path: Path, method: str
) -> None:
    torch.set_num_threads(1)
    path, net = checkpoint
    model = load_model(path)
    compressed, report = compress(
        model, MetaClusterConfig(method=method, k=4, **FAST), load_dataset("digits")
    )
    write_artifact(compressed, tmp_path / "m.mcz", report)
    manifest, _ = read_manifest(tmp_path / "m.mcz")
    x = _x()
    dense = load_artifact(tmp_path / "m.mcz")
    codebook = load_artifact(tmp_path / "m.mcz", runtime="compressed")
    with torch.no_grad():
        want = compressed(x)
        assert float((dense(x) - want).abs().max()) <= 1e-5
        assert float((codebook(x) - want).abs().max()) <= 1e-4
        # K=4 on 18 and 36 edges: the conv layers really were quantized
        assert float((want - net(x)).abs().max()) > 1e-3
    # the Linear head travels as a dense tensor and is counted in the file's bytes
    head = dense.layers[-1]
    assert isinstance(head, nn.Linear) and head.weight.shape == (10, 8)
    assert report.to_dict()["bytes_breakdown"]["dense"] >= 4 * (8 * 10 + 10)
    assert manifest["layers"]  # the two conv layers' codebooks


def test_lossless_codebook_gives_the_upstream_outputs(
    checkpoint: tuple[Path, Net], tmp_path: Path
) -> None:
    """K as large as each layer's edge count, no fine-tuning: nothing is quantized away,
    so the artifact reproduces the upstream model itself."""
    torch.set_num_threads(1)
    path, net = checkpoint
    config = MetaClusterConfig(
        method="kmeans", k=36, **{**FAST, "finetune_epochs": 0, "kmeans_restarts": 2}
    )
    compressed, report = compress(load_model(path), config, load_dataset("digits"))
    write_artifact(compressed, tmp_path / "m.mcz", report)
    x = _x()
    with torch.no_grad():
        assert float((load_artifact(tmp_path / "m.mcz")(x) - net(x)).abs().max()) <= 1e-4
