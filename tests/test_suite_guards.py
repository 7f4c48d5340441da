"""The suite cannot pass by skipping what it needs: PostgreSQL and Redis unreachable
make the service tests fail, not skip (a CI without them must go red)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(test: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", test],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "test",
    [
        "tests/service/test_service_migrations.py::test_upgrade_downgrade_and_no_drift[postgresql]",
        "tests/service/test_service_health.py",
    ],
)
def test_postgres_unreachable_fails_instead_of_skipping(test: str) -> None:
    # A name in the reserved .invalid domain never resolves: no server, no traffic.
    out = _run(test, METACLUSTER_TEST_PG_HOST="postgres.invalid")
    tail = out.stdout.strip().splitlines()[-1]
    assert out.returncode != 0, out.stdout[-2000:]
    assert ("failed" in tail or "error" in tail) and "skipped" not in tail, tail
