"""`make run` (scripts/quickstart.py): the port is checked first, the key is printed last
(once /readyz answers), works against the server, and is reused by the next run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from ._stack import REPO, Proc, child_env, free_port, wait_healthy, wait_until

KEY = re.compile(r"mck_[A-Za-z0-9_-]+")


def _start(tmp_path: Path, port: int, name: str) -> Proc:
    env = child_env({"METACLUSTER_DATA_DIR": str(tmp_path / "data")})
    args = [sys.executable, str(REPO / "scripts" / "quickstart.py"), "--port", str(port)]
    return Proc(name, args, env, tmp_path)


def _printed_key(proc: Proc) -> str:
    wait_until(lambda: "is ready on" in proc.log_path.read_text(), 60, "the quickstart", proc)
    text = proc.log_path.read_text()
    found = KEY.findall(text)
    assert found and len(set(found)) == 1, text
    # printed last: after the server answered, nothing but the quickstart follows it
    tail = text[text.index("is ready on") :]
    assert "Stop with Ctrl-C." in tail and "Started server process" not in tail
    assert str(Path(sys.executable).parent / "metacluster") in tail  # a runnable CLI path
    return found[0]


def test_quickstart_prints_a_working_key_last_and_reuses_it(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port, "quickstart")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout_s=90)
        key = _printed_key(proc)
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{base}/v1/jobs", headers=auth, timeout=5).status_code == 200
        bad = httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 401
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert (tmp_path / "data" / "metacluster.db").is_file()
        assert (tmp_path / "data" / "quickstart.key").stat().st_mode & 0o077 == 0

        # A second `make run` on the busy port: a one-line error, no key, exit 1.
        busy = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "quickstart.py"), "--port", str(port)],
            env=child_env({"METACLUSTER_DATA_DIR": str(tmp_path / "data")}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode == 1
        assert "already in use" in busy.stderr and len(busy.stderr.strip().splitlines()) == 1
        assert not KEY.search(busy.stdout + busy.stderr)
    finally:
        proc.stop(grace_s=40)

    # The next run reuses the quickstart key instead of adding one more.
    port2 = free_port()
    again = _start(tmp_path, port2, "quickstart-2")
    try:
        wait_healthy(f"http://127.0.0.1:{port2}", again, timeout_s=90)
        assert _printed_key(again) == key
        assert "reused" in again.log_path.read_text()
    finally:
        again.stop(grace_s=40)
    from core.db import ApiKey, session_scope
    from core.settings import Settings

    with session_scope(Settings(data_dir=tmp_path / "data")) as s:
        assert s.query(ApiKey).filter(ApiKey.name == "quickstart").count() == 1


def test_keys_made_from_another_folder_reach_the_running_server(tmp_path: Path) -> None:
    """`metacluster keys create` run elsewhere finds the data directory `serve` used
    (no METACLUSTER_DATA_DIR anywhere), instead of silently making a new database."""
    from .test_embedded import _metacluster

    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    checkout.mkdir()
    elsewhere.mkdir()
    env = child_env({"XDG_STATE_HOME": str(tmp_path / "state")})
    port = free_port()
    proc = Proc("serve", [*_metacluster(), "serve", "--port", str(port)], env, tmp_path, checkout)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout_s=90)
        assert (checkout / "data" / "metacluster.db").is_file()
        made = subprocess.run(
            [*_metacluster(), "keys", "create", "--name", "from-elsewhere", "--json"],
            env=env,
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        assert f"using key database {checkout / 'data' / 'metacluster.db'}" in made.stderr
        assert not (elsewhere / "data").exists()
        key = json.loads(made.stdout)["key"]
        r = httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert r.status_code == 200
    finally:
        proc.stop(grace_s=40)
