"""The job's public shape is written twice: the API schema (`service.schemas.JobOut`)
and the client's record (`metacluster.client.Job`). The database view in between
(`core.repositories.JobView`) takes every column that is not private by name, so a new
column of `jobs` is either declared private or appears in the API (this test)."""

from __future__ import annotations

from dataclasses import fields

from core.db.models import Job
from core.repositories import _VIEW_COLUMNS, PRIVATE_JOB_COLUMNS, JobView
from metacluster.client import Job as ClientJob
from service.schemas import JobOut

COMPUTED = {"artifacts", "report_url"}  # made by the route from the artifacts


def test_every_public_column_of_a_job_is_a_field_of_the_api_schema() -> None:
    public = {c.name for c in _VIEW_COLUMNS}
    assert public == set(JobOut.model_fields) - COMPUTED
    assert public | PRIVATE_JOB_COLUMNS == {c.name for c in Job.__table__.c}


def test_the_view_restates_no_field() -> None:
    assert [f.name for f in fields(JobView)] == ["columns", "artifacts"]


def test_the_client_record_reads_what_the_api_writes() -> None:
    record = {f.name for f in fields(ClientJob)} - {"raw"}
    assert record <= set(JobOut.model_fields)
