"""`make audit`: pip-audit over the locked dependencies (requirements.lock).

Fails on any known vulnerability that `.ci/audit-allow.txt` does not list with a
written reason (one line each: `VULN-ID  package  reason`). pip-audit asks PyPI's JSON
API for vulnerability data; where that is unreachable (a registry mirror that serves
only the simple index, as on the project's CI machines) nothing can be audited, and
its last line says `audit: SKIPPED, 0/N packages checked: no network ...` and it exits
0, so `make test` still runs offline (CI decides: the project's CI has no route to that
API and skips visibly); `--strict` (or METACLUSTER_AUDIT_STRICT=1) makes that a failure,
for a machine that can reach PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# judge()'s status when nothing could be audited: a visible skip (exit 0), or with
# --strict a failure.
SKIPPED = 2
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
    lines.append(summary(len(audited), deps, bad))
    if deps and not audited:
        return SKIPPED, lines
    return (1 if bad else 0), lines


def summary(n_audited: int, deps: list[dict[str, Any]], bad: int) -> str:
    """The last line: OK, VULNERABLE, PARTIAL (some packages skipped) or SKIPPED (none
    checked: no network to the vulnerability service), with the counts."""
    if deps and not n_audited:
        reasons = sorted({str(d.get("skip_reason", "?")) for d in deps})
        return skipped_line(len(deps), f"pip-audit: {reasons[0]}")
    verdict = "VULNERABLE" if bad else "PARTIAL" if n_audited < len(deps) else "OK"
    skipped = sorted(d["name"] for d in deps if "skip_reason" in d)
    tail = f", skipped: {', '.join(skipped)}" if skipped else ""
    return f"audit: {verdict}, {n_audited}/{len(deps)} packages checked, {bad} unlisted vulnerabilities{tail}"


def skipped_line(total: int, why: str) -> str:
    return (
        f"audit: SKIPPED, 0/{total} packages checked: no network to the vulnerability "
        f"service (PyPI's JSON API) - {why}; this is NOT a clean audit"
    )


def locked_count(path: Path = LOCK) -> int:
    return sum("==" in line for line in path.read_text(encoding="utf-8").splitlines())


def parse_report(stdout: str) -> dict[str, Any]:
    """pip-audit's JSON report; {} when it wrote none (it stops at the first request that
    cannot connect)."""
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        return {}
    return report if isinstance(report, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--strict",
        action="store_true",
        default=os.environ.get("METACLUSTER_AUDIT_STRICT") == "1",
        help="fail when nothing could be audited",
    )
    args = parser.parse_args(argv)
    cmd = [sys.executable, "-m", "pip_audit", "-r", str(LOCK), "--no-deps", "--disable-pip"]
    cmd += ["--progress-spinner", "off", "-f", "json"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    report = parse_report(run.stdout)
    if not report.get("dependencies"):
        last = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
        print(skipped_line(locked_count(), f"pip-audit stopped: {last[:160]}"), file=sys.stderr)
        return 1 if args.strict else 0
    status, lines = judge(report, allowed())
    for line in lines:
        print(line, file=sys.stderr)
    if status == SKIPPED:
        return 1 if args.strict else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
