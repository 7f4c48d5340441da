"""Library demo: train a B-spline KAN on the built-in digits data, compress it, report sizes.

Run with `make demo`; everything is offline and takes about a minute on a laptop CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from metacluster import (
    MetaClusterConfig,
    build_kan,
    compress,
    evaluate,
    load_artifact,
    load_dataset,
    save_model,
    train_model,
    write_artifact,
)


def main() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_kan("bspline", [64, 32, 10])
    train_model(model, data, epochs=30, seed=0)
    metric, value = evaluate(model, data)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "digits.safetensors"
        save_model(model, src)
        print(f"trained KAN 64-32-10 on digits: {metric} {value:.4f}, {src.stat().st_size} bytes")
        compressed, report = compress(model, MetaClusterConfig(k=16), data)
        art = Path(tmp) / "digits.mcz"
        write_artifact(compressed, art, report)
        _, after = evaluate(load_artifact(art), data)
        ratio = src.stat().st_size / art.stat().st_size
        print(
            f"compressed (K=16): {metric} {after:.4f}, {art.stat().st_size} bytes, "
            f"{ratio:.1f}x smaller on disk"
        )


if __name__ == "__main__":
    main()
