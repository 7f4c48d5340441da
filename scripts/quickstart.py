"""`make run`: start the service in embedded mode and print an API key with a curl quickstart.

SQLite and a server-less broker under the data directory; nothing else needs to run.
The port is checked first; the quickstart key is kept (``quickstart.key`` in the data
directory, readable by its owner only) and reused while it is valid, so each run does
not add one more; the key and the commands are printed last, once ``/readyz`` answers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

from core.settings import Settings, get_settings

KEY_FILE = "quickstart.key"

QUICKSTART = """
MetaCluster is ready on {api} (API + embedded worker; data in {data_dir}).
API key ({key_state}): {key}

In a second terminal, in this folder (README.md, "Five-minute tour"):
  export METACLUSTER_URL={api} METACLUSTER_API_KEY={key}
  {cli} train --data digits --family bspline --width 64,32,10 --epochs 30 --out kan.safetensors
  curl -sH "Authorization: Bearer $METACLUSTER_API_KEY" -F file=@kan.safetensors $METACLUSTER_URL/v1/models
  {cli} remote submit kan.safetensors --data digits --k 16 --set soft_epochs=20 --set soft_min_steps=0 --wait --download out/
  {cli} remote jobs
The tour goes on with curl + jq, Python and pipelines: README.md, steps 3-5.

Dashboard: {api}/    OpenAPI: {api}/docs    Python client and CLI: docs/pipelines.md
`metacluster` is in {bin_dir} (or `source {activate}` to put it on PATH).
Stop with Ctrl-C.
"""


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def quickstart_key(settings: Settings) -> tuple[str, str]:
    """(key, "new" | "reused"): the kept quickstart key while it is valid, else a new one."""
    from core.db.session import session_scope
    from core.migrations import upgrade_database
    from core.service_errors import UnauthorizedError
    from service.auth import authenticate
    from service.embedded import create_key

    upgrade_database(settings)
    path = settings.data_dir / KEY_FILE
    with contextlib.suppress(OSError):
        kept = path.read_text(encoding="utf-8").strip()
        try:
            with session_scope(settings) as session:
                authenticate(session, f"Bearer {kept}")
            return kept, "reused"
        except UnauthorizedError:
            pass  # revoked or from another database: make a new one
    key = create_key("quickstart", settings=settings)["key"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key, "new, kept in " + str(path)


def wait_ready(api: str, timeout_s: float = 300.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(Exception),
            urllib.request.urlopen(f"{api}/readyz", timeout=2) as r,
        ):
            if r.status == 200:
                return True
        time.sleep(0.25)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if port_in_use(args.host, args.port):
        print(
            f"error: port {args.port} on {args.host} is already in use (another `make run`?); "
            "choose another with: make run PORT=8001",
            file=sys.stderr,
        )
        sys.exit(1)
    settings = get_settings()
    key, key_state = quickstart_key(settings)
    api = f"http://{args.host}:{args.port}"
    bin_dir = Path(sys.executable).parent

    def announce() -> None:
        if wait_ready(api):
            print(
                QUICKSTART.format(
                    api=api,
                    key=key,
                    key_state=key_state,
                    data_dir=settings.data_dir.resolve(),
                    cli=bin_dir / "metacluster",
                    bin_dir=bin_dir,
                    activate=bin_dir / "activate",
                ),
                flush=True,
            )

    threading.Thread(target=announce, name="quickstart", daemon=True).start()
    from service.embedded import serve

    serve(args.host, args.port, log_level="warning")


if __name__ == "__main__":
    main()
