"""Byte identity of fixed-seed artifacts (scripts/artifact_digests.py).

The fixture tests/fixtures/artifact_digests.json was written before the engine room's
refactor (issue 17); every case - each registered method on a B-spline MLP, the rbf,
chebyshev, fourier and conv_bspline families, a byte budget - must still write the same
bytes, through the one use case (`workflow.compress_file`) and through the library
(`metacluster.compress` + `artifact_bytes`). The run takes about 35 s on one thread, in a
subprocess so the thread count and the RNG start clean. Floats depend on the torch build
and the CPU: in another environment than the fixture's the test is skipped, not passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "artifact_digests.json"
SCRIPT = ROOT / "scripts" / "artifact_digests.py"


def _environment() -> dict[str, str]:
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


def test_fixed_seed_artifacts_are_byte_identical() -> None:
    expected = json.loads(FIXTURE.read_text())
    if expected["environment"] != _environment():
        pytest.skip(f"fixture written with {expected['environment']}, here {_environment()}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert sorted(found) == sorted(expected)  # every case ran
    differ = {
        name: (expected[name], found[name]) for name in expected if found[name] != expected[name]
    }
    assert differ == {}
