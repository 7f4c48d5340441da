"""Units of `metacluster.client` and `metacluster remote` that need no server: the SSE
parser, Retry-After, error mapping, pykan file pairs, the pipeline gates.

The client against a real service: tests/integration/test_client.py, test_remote_cli.py.
"""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from metacluster.client import (
    AuthenticationError,
    ConflictError,
    IdempotencyConflictError,
    Job,
    NotFoundError,
    RateLimitError,
    ServerError,
    SSEParser,
    ValidationError,
    error_from_response,
    model_files,
    retry_after_s,
)
from metacluster.remote import check_gates, exit_code, metric_drop


def test_sse_parser_joins_data_lines_skips_comments_and_tracks_the_last_id() -> None:
    parser = SSEParser()
    lines = [
        "retry: 1000",
        "",
        ": heartbeat",
        "id: 7",
        "event: stage",
        'data: {"seq": 7, "kind": "stage",',
        'data: "stage": "meta", "progress": 0.25}',
        "",
    ]
    events = [e for e in (parser.feed(line) for line in lines) if e is not None]
    assert len(events) == 1 and (events[0].seq, events[0].stage) == (7, "meta")
    assert events[0].progress == 0.25 and parser.last_id == "7" and parser.retry_ms == 1000
    final = parser.feed('data: {"seq": 8, "kind": "status", "data": {"status": "failed"}}')
    assert final is None and parser.feed("").final  # type: ignore[union-attr]


def _response(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_s(_response(503, **{"Retry-After": "7"}), 1.0) == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_s(_response(429, **{"Retry-After": when}), 1.0) <= 30
    assert retry_after_s(_response(503), 1.5) == 1.5
    assert retry_after_s(_response(503, **{"Retry-After": "soon"}), 2.0) == 2.0


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthorized", AuthenticationError),
        (404, "not_found", NotFoundError),
        (409, "idempotency_conflict", IdempotencyConflictError),
        (409, "job_finished", ConflictError),
        (422, "incompatible", ValidationError),
        (429, "rate_limited", RateLimitError),
        (500, "internal", ServerError),
    ],
)
def test_problem_codes_become_typed_errors(status: int, code: str, cls: type) -> None:
    problem = {"status": status, "code": code, "title": "t", "detail": "what went wrong"}
    err = error_from_response(_response(status, problem))
    assert type(err) is cls and err.code == code and err.status == status
    assert err.detail == "what went wrong" and str(err) == f"{status} {code}: what went wrong"


def test_a_non_problem_error_still_has_a_type() -> None:
    err = error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(err, ServerError) and err.status == 502


def test_a_pykan_checkpoint_uploads_both_files(tmp_path: Path) -> None:
    (tmp_path / "m_config.yml").write_text("width: [2, 1]")
    (tmp_path / "m_state").write_bytes(b"state")
    pair = [tmp_path / "m_config.yml", tmp_path / "m_state"]
    for name in ("m", "m_state", "m_config.yml"):
        assert model_files(tmp_path / name) == pair
    (tmp_path / "k.pt").write_bytes(b"x")
    (tmp_path / "k.pt.spec.json").write_text("{}")
    assert model_files(tmp_path / "k.pt") == [tmp_path / "k.pt", tmp_path / "k.pt.spec.json"]
    from metacluster.client import ClientError

    with pytest.raises(ClientError, match="not found"):
        model_files(tmp_path / "nope.pt")


def _job(status: str, **metrics: Any) -> Job:
    return Job.from_dict({"id": "job_1", "status": status, "metrics": metrics or None})


def test_gates_and_exit_codes() -> None:
    acc = _job("succeeded", metric="accuracy", before=0.95, after=0.93, ratio=40.0)
    assert metric_drop(acc.metrics or {}) == pytest.approx(0.02)
    assert check_gates(acc, 30, 0.05)["passed"] and exit_code(acc, check_gates(acc, 30, 0.05)) == 0
    missed = check_gates(acc, 50, 0.01)
    assert exit_code(acc, missed) == 5 and len(missed["failures"]) == 2
    rmse = _job("succeeded", metric="rmse", before=0.10, after=0.12, ratio=20.0)
    assert metric_drop(rmse.metrics or {}) == pytest.approx(0.2)  # relative increase
    assert exit_code(_job("failed"), None) == 3 and exit_code(_job("cancelled"), None) == 4


def test_records_from_the_api_json() -> None:
    """Model, Dataset and Event: the first field is required, str/int fields default to
    "" / 0 and are cast, the others default to None, and `raw` keeps the object."""
    from metacluster.client import Dataset, Event, Model

    model = Model.from_dict({"id": "mdl_1", "edges": "96", "family": "pykan", "extra": 1})
    assert (model.id, model.edges, model.params, model.family, model.sha256) == (
        "mdl_1", 96, 0, "pykan", ""
    )  # fmt: skip
    assert model.raw["extra"] == 1
    assert Dataset.from_dict({"id": "ds_1", "n_train": 124}).n_test == 0
    event = Event.from_dict({"seq": 3, "kind": "status", "data": {"status": "failed"}})
    assert event.stage is None and event.progress is None and event.at == "" and event.final
    with pytest.raises(KeyError):
        Model.from_dict({"filename": "m.pt"})
