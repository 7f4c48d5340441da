"""`metacluster serve` (API + embedded worker, SQLite) on a free port, with a key made by
`metacluster keys create`, as a newcomer starts it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ._stack import Proc, child_env, free_port, wait_healthy


@contextlib.contextmanager
def serve_sqlite(folder: Path) -> Iterator[dict[str, str]]:
    """Yields what the README tour exports: METACLUSTER_URL and METACLUSTER_API_KEY."""
    env = child_env({"METACLUSTER_DATA_DIR": str(folder / "data")})
    cli = str(Path(sys.executable).with_name("metacluster"))
    port = free_port()
    proc = Proc("serve", [cli, "serve", "--port", str(port)], env, folder, folder)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, timeout_s=120)
        made = subprocess.run(
            [cli, "keys", "create", "--name", "newcomer", "--json"],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        yield {"METACLUSTER_URL": url, "METACLUSTER_API_KEY": json.loads(made.stdout)["key"]}
    finally:
        proc.stop(grace_s=30)
