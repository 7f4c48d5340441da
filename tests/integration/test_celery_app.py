"""The Celery app's delivery semantics and routing, read from its configuration.

The behaviour they buy (re-delivery, resume) is exercised with real workers elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from core.producer import TASK_COMPRESS, get_celery, make_celery
from core.settings import Settings, get_settings


def test_late_acks_one_message_at_a_time_json_only(tmp_path: Path) -> None:
    app = make_celery(Settings(data_dir=tmp_path))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.result_backend is None and conf.task_ignore_result
    assert conf.task_default_queue == "cpu"


def test_task_is_registered_by_name_with_late_acks(tmp_path: Path) -> None:
    from worker.celery_app import TASK_MODULES

    app = make_celery(Settings(data_dir=tmp_path), include=TASK_MODULES)
    app.loader.import_default_modules()
    task = app.tasks[TASK_COMPRESS]
    assert task.acks_late and task.reject_on_worker_lost
    assert task.name == "metacluster.compress_job"


def test_task_hands_its_message_id_to_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def run_job(job_id: str, **kwargs: Any) -> str:
        calls.append((job_id, kwargs))
        return "succeeded"

    monkeypatch.setattr("worker.runner.run_job", run_job)
    app = make_celery(Settings(data_dir=tmp_path))
    app.loader.import_default_modules()
    task = app.tasks[TASK_COMPRESS]
    task.apply(args=["job_a"], task_id="msg-1")
    task.apply(args=["job_b"], kwargs={"takeover": True}, task_id="msg-2")
    assert calls == [
        ("job_a", {"message_id": "msg-1", "takeover": False}),
        ("job_b", {"message_id": "msg-2", "takeover": True}),
    ]


@pytest.mark.parametrize("interval", [0.2, 0.0])
def test_worker_ready_starts_the_requeue_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float
) -> None:
    from worker import tasks

    monkeypatch.setenv("METACLUSTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("METACLUSTER_REQUEUE_INTERVAL_S", str(interval))
    get_settings.cache_clear()
    try:
        tasks._start_requeue_timer()
        timer = tasks._requeue_timer
        if interval == 0:
            assert timer is None  # 0 turns the sweep off
            return
        assert timer is not None and timer.is_alive() and timer.interval_s == interval
        # Its sweeps fail here (the database has no tables): logged, and the timer lives on.
        time.sleep(3 * interval)
        assert timer.is_alive()
        tasks._stop_requeue_timer()
        assert tasks._requeue_timer is None and not timer.is_alive()
    finally:
        tasks._stop_requeue_timer()
        get_settings.cache_clear()


def test_redis_visibility_timeout_follows_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3", broker_visibility_timeout_s=8
    )
    options = make_celery(settings).conf.broker_transport_options
    assert options["visibility_timeout"] == 8
    # Restores are scanned often enough to notice a dead worker soon after the timeout.
    assert options["unacked_restore_interval"] == 2 and options["unacked_restore_throttle"] == 1


def test_embedded_broker_is_polled_fast_and_has_no_remote_control(tmp_path: Path) -> None:
    from kombu.transport import sqlalchemy as sqla_transport

    app = make_celery(Settings(data_dir=tmp_path))
    assert app.conf.broker_url == f"sqla+sqlite:///{tmp_path}/broker.db"
    # kombu passes this transport's options to create_engine(); the interval is set on the class.
    assert app.conf.broker_transport_options == {}
    assert sqla_transport.Transport.polling_interval <= 0.25
    assert app.conf.worker_enable_remote_control is False


def test_get_celery_is_cached_per_settings(tmp_path: Path) -> None:
    a = Settings(data_dir=tmp_path / "a")
    b = Settings(data_dir=tmp_path / "b")
    assert get_celery(a) is get_celery(a)
    assert get_celery(a) is not get_celery(b)
    assert get_celery(b).conf.broker_url.endswith("/b/broker.db")
