"""Guards on the package surface: public names, import hygiene, no CUDA at import."""

from __future__ import annotations

import json
import subprocess
import sys

import metacluster

EXPECTED_PUBLIC = {
    "Basis",
    "Dataset",
    "EdgeView",
    "KANLayer",
    "KANModel",
    "MetaClusterConfig",
    "MetaClusterError",
    "build_kan",
    "compress",
    "evaluate",
    "export_model",
    "inspect_model",
    "load_artifact",
    "load_dataset",
    "load_model",
    "save_model",
    "train_model",
    "write_artifact",
    "__version__",
}


def test_public_surface_is_stable() -> None:
    assert set(metacluster.__all__) == EXPECTED_PUBLIC


def test_every_public_name_resolves() -> None:
    for name in metacluster.__all__:
        assert getattr(metacluster, name) is not None, name


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_import_pulls_in_no_service_stack_and_no_cuda() -> None:
    result = _run(
        "import json, sys, torch\n"
        "import metacluster\n"
        "for n in metacluster.__all__: getattr(metacluster, n)\n"
        "import metacluster.cli\n"
        "print(json.dumps({'mods': sorted(m for m in ('fastapi', 'sqlalchemy', 'celery')"
        " if m in sys.modules), 'cuda': torch.cuda.is_initialized()}))"
    )
    assert result == {"mods": [], "cuda": False}


def test_all_matches_the_lazy_export_table() -> None:
    assert set(metacluster.__all__) == {*metacluster._EXPORTS, "__version__"}
