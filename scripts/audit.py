"""`make audit`: pip-audit over the locked dependencies (requirements.lock).

Fails on any known vulnerability that `.ci/audit-allow.txt` does not list with a
written reason (one line each: `VULN-ID  package  reason`). pip-audit asks PyPI's JSON
API for vulnerability data; where that is unreachable (a registry mirror that serves
only the simple index, as on the project's CI machines) nothing can be audited, and
this says so plainly on stderr instead of reporting a clean audit. `--strict` turns
that case into a failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
ALLOW = ROOT / ".ci" / "audit-allow.txt"


def allowed(path: Path = ALLOW) -> dict[str, str]:
    """VULN-ID -> reason, from the allow-list (comments and blank lines ignored)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise SystemExit(f"{path}: '{line}' needs an id, a package and a reason")
        out[parts[0]] = f"{parts[1]}: {parts[2]}"
    return out


def judge(report: dict[str, Any], allow: dict[str, str]) -> tuple[int, list[str]]:
    """(exit status, lines to print) for a pip-audit JSON report."""
    lines: list[str] = []
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    bad = 0
    for dep in audited:
        for vuln in dep.get("vulns", []):
            ids = [vuln.get("id", "?"), *vuln.get("aliases", [])]
            reason = next((allow[i] for i in ids if i in allow), None)
            where = f"{dep['name']} {dep.get('version', '?')}: {ids[0]}"
            if reason is None:
                bad += 1
                fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
                lines.append(f"VULNERABLE {where} (fixed in {fixed})")
            else:
                lines.append(f"allowed {where}: {reason}")
    lines.append(
        f"pip-audit: {len(audited)} of {len(deps)} locked packages audited, {bad} unlisted vulnerabilities"
    )
    if deps and not audited:
        lines.append(
            "WARNING: no package could be audited: the vulnerability service is unreachable "
            "from here (PyPI's JSON API); this is NOT a clean audit"
        )
        return 2, lines
    return (1 if bad else 0), lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strict", action="store_true", help="fail when nothing could be audited")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "pip_audit", "-r", str(LOCK), "--no-deps", "--disable-pip"]
    cmd += ["--progress-spinner", "off", "-f", "json"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(run.stdout or "{}")
    except json.JSONDecodeError:
        print(run.stdout[-2000:] + run.stderr[-2000:], file=sys.stderr)
        return 1
    status, lines = judge(report, allowed())
    for line in lines:
        print(line, file=sys.stderr)
    if status == 2:
        return 1 if args.strict else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
