"""The sha256 of the artifact each fixed-seed case writes: a refactor's byte-identity check.

Each case builds a tiny KAN from a fixed seed (untrained: the engine does not care),
compresses it on the built-in "digits" set with a fast config through the one use case
(`workflow.compress_file`, so the artifact is the file written) and through the library
(`metacluster.compress` + `artifact_bytes`), and records the digest of the bytes and the
report's byte count and ratio. Cases: every registered method on a B-spline MLP, the
families rbf, chebyshev, fourier and conv_bspline with the default method, and a byte
budget (its per-layer allocation reads the size estimates).

    OMP_NUM_THREADS=1 python scripts/artifact_digests.py            # print the JSON
    OMP_NUM_THREADS=1 python scripts/artifact_digests.py --write F  # also write it to F

`tests/test_artifact_digests.py` recomputes the committed fixture
(tests/fixtures/artifact_digests.json) and compares. Float results depend on the CPU and
the torch build, so the fixture holds for the machine and environment that wrote it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

METHODS = ("dkm", "metacluster", "kmeans", "gainshape", "pq", "scalar", "int8", "int4")
FAMILIES = ("rbf", "chebyshev", "fourier", "conv_bspline")


def fast_config(method: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "method": method,
        "k": 8,
        "seed": 0,
        "regress_steps": 20,
        "meta_epochs": 1,
        "soft_epochs": 1,
        "soft_min_steps": 0,
        "finetune_epochs": 1,
        "kmeans_iters": 8,
        "kmeans_restarts": 1,
        "device": "cpu",
        "baselines": False,
        "effort": "fast",
    }
    base.update(overrides)
    return base


def cases() -> dict[str, tuple[str, list[int], dict[str, Any]]]:
    """name -> (family, widths, config dict)."""
    out: dict[str, tuple[str, list[int], dict[str, Any]]] = {}
    for method in METHODS:
        out[f"bspline-{method}"] = ("bspline", [64, 8, 10], fast_config(method))
    for family in FAMILIES:
        widths = [10] if family.startswith("conv") else [64, 8, 10]
        out[f"{family}-dkm"] = (family, widths, fast_config("dkm"))
    out["bspline-dkm-budget"] = ("bspline", [64, 8, 10], fast_config("dkm", target_ratio=6.0))
    return out


def digest_case(family: str, widths: list[int], config: dict[str, Any]) -> dict[str, Any]:
    import torch

    from metacluster.artifact import artifact_bytes
    from metacluster.compress import MetaClusterConfig, compress
    from metacluster.data import load_dataset
    from metacluster.formats import save_model
    from metacluster.training import build_model_for
    from metacluster.workflow import compress_file

    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    conv = {"input_shape": (1, 8, 8), "channels": [2], "grid_size": 3}
    options = conv if family.startswith("conv") else {}
    model = build_model_for(data, family, widths, **options)
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "model.safetensors", Path(tmp) / "model.mcz"
        save_model(model, source)
        report = compress_file(source, data, MetaClusterConfig.from_dict(config), out)
        written = out.read_bytes()
    compressed, lib_report = compress(model, MetaClusterConfig.from_dict(config), data)
    library = artifact_bytes(compressed, lib_report)
    return {
        "sha256": hashlib.sha256(written).hexdigest(),
        "bytes": len(written),
        "ratio": round(report.ratio, 6),
        "library_sha256": hashlib.sha256(library).hexdigest(),
        "library_bytes": len(library),
    }


def environment() -> dict[str, str]:
    """What the float results depend on besides the code (a fixture holds for these)."""
    import platform

    import numpy
    import torch

    return {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "machine": platform.machine(),
        # the vector ISA torch's kernels (and kan/native.py's -march=native) were built for
        "isa": torch.backends.cpu.get_cpu_capability(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="also write the JSON to this file")
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"environment": environment()}
    result.update(
        (name, digest_case(*case))
        for name, case in cases().items()
        if not args.only or name in args.only
    )
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    sys.stdout.write(text)
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
