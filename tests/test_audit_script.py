"""scripts/audit.py: how a pip-audit report is judged (a vulnerability fails the build
unless the allow-list gives a reason; nothing audited is never reported as clean)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit", ROOT / "scripts" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(*deps: dict[str, object]) -> dict[str, object]:
    return {"dependencies": list(deps), "fixes": []}


def test_a_known_vulnerability_fails(audit: ModuleType) -> None:
    report = _report(
        {"name": "ok", "version": "1", "vulns": []},
        {
            "name": "bad",
            "version": "2",
            "vulns": [{"id": "PYSEC-1", "aliases": ["CVE-9"], "fix_versions": ["3"]}],
        },
    )
    status, lines = audit.judge(report, {})
    assert status == 1 and any("VULNERABLE bad 2: PYSEC-1 (fixed in 3)" in line for line in lines)


def test_an_allowed_vulnerability_needs_its_reason(audit: ModuleType, tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("# comment\nCVE-9  bad  only reachable through a feature we do not use\n")
    reasons = audit.allowed(allow)
    report = _report(
        {"name": "bad", "version": "2", "vulns": [{"id": "PYSEC-1", "aliases": ["CVE-9"]}]}
    )
    status, lines = audit.judge(report, reasons)
    assert status == 0 and any("do not use" in line for line in lines)
    allow.write_text("CVE-9 bad\n")
    with pytest.raises(SystemExit, match="needs an id, a package and a reason"):
        audit.allowed(allow)


def test_nothing_audited_is_not_a_clean_audit(audit: ModuleType) -> None:
    report = _report({"name": "a", "skip_reason": "Dependency not found on PyPI"})
    status, lines = audit.judge(report, {})
    assert status == audit.SKIPPED and "NOT a clean audit" in lines[-1]
    assert lines[-1].startswith("audit: SKIPPED, 0/1 packages checked: no network")


def test_the_lock_file_pins_every_project_dependency() -> None:
    lock = (ROOT / "requirements.lock").read_text().lower()
    pinned = {line.split("==")[0].replace("_", "-") for line in lock.splitlines() if "==" in line}
    for name in (
        "torch",
        "fastapi",
        "sqlalchemy",
        "celery",
        "schemathesis",
        "pip-audit",
        "fastapi-offline",
        "boto3",
        "mlflow-skinny",
        "matplotlib",
        "selenium",
    ):
        assert name in pinned, name


def _fake_pip_audit(
    monkeypatch: pytest.MonkeyPatch, audit: ModuleType, stdout: str, stderr: str, rc: int
) -> None:
    def run(cmd: list[str], **_: object) -> object:
        assert "pip_audit" in cmd
        return type("Run", (), {"stdout": stdout, "stderr": stderr, "returncode": rc})()

    monkeypatch.setattr(audit.subprocess, "run", run)


@pytest.mark.parametrize(
    ("stdout", "stderr", "why"),
    [
        # a mirror that serves only the simple index: every package skipped
        (
            '{"dependencies": [{"name": "a", "version": "1", "skip_reason": "Dependency not '
            'found on PyPI and could not be audited"}, {"name": "b", "version": "2", '
            '"skip_reason": "Dependency not found on PyPI and could not be audited"}]}',
            "",
            "pip-audit: Dependency not found on PyPI",
        ),
        # no route at all: pip-audit stops with a traceback and writes no report
        ("", "Traceback ...\nrequests.exceptions.ConnectionError: pypi.org: refused", "refused"),
    ],
)
def test_offline_is_a_visible_skip_and_strict_fails(
    audit: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdout: str,
    stderr: str,
    why: str,
) -> None:
    _fake_pip_audit(monkeypatch, audit, stdout, stderr, 1)
    monkeypatch.delenv("METACLUSTER_AUDIT_STRICT", raising=False)
    total = 2 if stdout else audit.locked_count()  # without a report: the lock's packages
    assert audit.main([]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"audit: SKIPPED, 0/{total} packages checked: no network"), last
    assert why in last and "NOT a clean audit" in last
    assert audit.main(["--strict"]) == 1
    monkeypatch.setenv("METACLUSTER_AUDIT_STRICT", "1")
    assert audit.main([]) == 1


def test_a_full_audit_says_ok_with_its_counts(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = '{"dependencies": [{"name": "a", "version": "1", "vulns": []}]}'
    _fake_pip_audit(monkeypatch, audit, report, "", 0)
    assert audit.main(["--strict"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "audit: OK, 1/1 packages checked, 0 unlisted vulnerabilities"
    )
