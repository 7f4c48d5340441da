"""`make run` (scripts/quickstart.py): the key it prints works against the server it starts."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx

from ._stack import REPO, Proc, child_env, free_port, wait_healthy, wait_until


def test_quickstart_prints_a_working_key_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = child_env({"METACLUSTER_DATA_DIR": str(tmp_path / "data")})
    proc = Proc(
        "quickstart",
        [sys.executable, str(REPO / "scripts" / "quickstart.py"), "--port", str(port)],
        env,
        tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc, timeout_s=90)
        wait_until(lambda: "mck_" in proc.log_path.read_text(), 10, "the printed key", proc)
        key = re.search(r"mck_[A-Za-z0-9_-]+", proc.log_path.read_text())
        assert key is not None
        auth = {"Authorization": f"Bearer {key.group(0)}"}
        assert httpx.get(f"{base}/v1/jobs", headers=auth, timeout=5).status_code == 200
        bad = httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 401
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert (tmp_path / "data" / "metacluster.db").is_file()
    finally:
        proc.stop(grace_s=40)
