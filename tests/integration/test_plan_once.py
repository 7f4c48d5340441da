"""One job, one plan per process, one config validation per process (issue 17, part 4).

A spy counts the calls of `plan` and of `MetaClusterConfig.validate` by their code
objects, wherever they are imported from: the request's validation (`validate_job`)
and a worker's run of the same job (`run_job`). The request plans once and validates
once (the method's options are parsed as part of it); the worker validates the stored
config once and plans once, and that plan gives both its progress weights and the
engine's run. (Measured before issue 17 with this spy: the request 1 plan, 1 validation
and 2 parses of the method options; the worker 2 plans, 5 validations and 8 parses.)
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from core.db.models import ApiKey
from core.db.session import session_scope
from metacluster.compress import MetaClusterConfig, MethodOptions, plan
from service.job_requests import validate_job
from service.schemas import JobCreate

from ._runner import Env
from .test_redis_postgres import QUICK

SPIED = {
    plan.__code__: "plan",
    MetaClusterConfig.validate.__code__: "validate",
    MethodOptions.from_dict.__func__.__code__: "options",
}


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Counts calls of the spied functions in this thread (sys.setprofile)."""
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code in SPIED:
            calls[SPIED[frame.f_code]] += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


def test_a_job_plans_once_and_validates_once_per_process(env: Env) -> None:
    request = JobCreate(model_id=env.model_id, dataset=env.dataset_id, config=dict(QUICK))
    with counting() as requested, session_scope(env.settings) as session:
        owner = session.get(ApiKey, env.owner_id)
        assert owner is not None
        valid = validate_job(session, owner, env.settings, request)
    job_id = env.job(valid.config)
    with counting() as ran:
        assert env.run(job_id) == "succeeded"
    assert dict(requested) == {"plan": 1, "validate": 1, "options": 1}
    assert dict(ran) == {"plan": 1, "validate": 1, "options": 1}
