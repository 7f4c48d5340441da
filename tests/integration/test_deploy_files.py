"""Static checks of the Dockerfile and docker-compose.yml (no container engine needed).

The compose file must parse, and every service's command must exist in this project.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from ._stack import REPO

COMPOSE = REPO / "docker-compose.yml"
APP_SERVICES = ("migrate", "api", "worker", "worker-cpu")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_parses_with_the_docker_client() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {**os.environ, "POSTGRES_PASSWORD": "x"}
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--profile", "cpu", "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    rendered = yaml.safe_load(out.stdout)
    assert set(rendered["services"]) == {"postgres", "redis", "minio", *APP_SERVICES}


def test_compose_has_the_roles_healthchecks_and_gpu_reservation() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    for name in ("postgres", "redis", "api", "worker"):
        assert "healthcheck" in services[name], name
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and len(devices[0]["device_ids"]) == 1
    for name in ("worker", "worker-cpu"):
        cmd = services[name]["command"]
        assert "--pool=solo" in cmd and "--concurrency=1" in cmd
    assert services["worker"]["command"][services["worker"]["command"].index("-Q") + 1] == "gpu"
    assert (
        services["worker-cpu"]["command"][services["worker-cpu"]["command"].index("-Q") + 1]
        == "cpu"
    )
    # The API and workers start only after the one-shot migration succeeded.
    for name in ("api", "worker", "worker-cpu"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
    for name, spec in services.items():
        for dep in spec.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_app_services_share_only_database_broker_and_bucket() -> None:
    """Blobs live in MinIO (S3): API and workers need no shared volume, so workers can
    run on other hosts."""
    services = _compose()["services"]
    assert "healthcheck" in services["minio"]
    for name in APP_SERVICES:
        spec = services[name]
        env = spec["environment"]
        assert env["METACLUSTER_STORAGE_URL"].startswith("s3://")
        assert env["METACLUSTER_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert "volumes" not in spec, f"{name} mounts a volume"
        if name != "migrate":
            assert spec["depends_on"]["minio"]["condition"] == "service_healthy"
        assert "s3" in spec["build"]["args"]["EXTRAS"].split(",")


def _console_scripts() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project.get("scripts", {}))


def _check_command(cmd: list[str]) -> None:
    """The program of a container command is a console script or importable module here."""
    program = cmd[0]
    if program == "celery":
        app = cmd[cmd.index("-A") + 1]
        module, _, attr = app.partition(":")
        assert getattr(importlib.import_module(module), attr or "app") is not None
        assert cmd[cmd.index("-A") + 2] == "worker"
    elif program == "uvicorn":
        target = next(a for a in cmd[1:] if ":" in a and not a.startswith("-"))
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        assert "--factory" in cmd
    elif program == "alembic":
        assert (REPO / "alembic.ini").is_file() and (REPO / "migrations" / "env.py").is_file()
        importlib.import_module("alembic.config")
    elif program in _console_scripts():
        pass
    else:
        raise AssertionError(f"unknown program {program!r} in {cmd}")


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_service_command_exists(service: str) -> None:
    _check_command(list(_compose()["services"][service]["command"]))


def test_dockerfile_default_command_and_copied_paths_exist() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert cmd[0] in _console_scripts()
    # Only COPY sources that are in the repository (README.md belongs to packaging).
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies missing path {src}"
    # Every package the project installs is in the image (a new one is easy to forget).
    includes = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for package in (pattern.rstrip("*") for pattern in includes):
        assert f"COPY {package} ./{package}\n" in text, f"Dockerfile does not copy {package}"
        assert f"{package}/__init__.py" in text, f"{package} missing from the dependency layer"
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    # The image installs the api and worker extras by default (GPU builds add `gpu`).
    assert "ARG EXTRAS=api,worker\n" in text and 'pip install ".[${EXTRAS}]"' in text


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    for entry in (".git", ".venv", "data", "tests"):
        assert entry in ignored
    # Everything the image copies is not ignored.
    for needed in ("metacluster", "core", "service", "worker", "migrations"):
        assert needed not in ignored


def test_gpu_workers_get_faiss_gpu_and_cpu_workers_do_not() -> None:
    services = _compose()["services"]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'pip install ".[${EXTRAS}]"' in dockerfile
    gpu = services["worker"]["build"]["args"]["EXTRAS"].split(",")
    cpu = services["worker-cpu"]["build"]["args"]["EXTRAS"].split(",")
    assert "gpu" in gpu and "gpu" not in cpu
    assert all(name in extras for name in gpu + cpu)
    assert any(dep.startswith("faiss-gpu") for dep in extras["gpu"])


def test_ci_entry_point_is_valid_bash_that_ends_in_make_test() -> None:
    """CI runs `bash .ci/run` in a fresh clone: a syntax error there fails every run."""
    script = REPO / ".ci" / "run"
    subprocess.run(["bash", "-n", str(script)], check=True, capture_output=True)
    lines = [x for x in script.read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert lines[0] == "set -euo pipefail" and lines[-1] == "make test"
