"""What the service answers, as frozen records: `Job` (with its `Artifact`s), `Model`,
`Dataset`, `Event`. Each keeps the whole JSON object in `raw`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self

from metacluster.client.errors import ClientError
from metacluster.filenames import MODEL_FILE

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Artifact:
    job_id: str
    name: str
    bytes: int
    sha256: str
    url: str


@dataclass(frozen=True)
class Job:
    """A compression job as the service last reported it (`raw` holds every field)."""

    id: str
    status: str
    stage: str | None
    progress: float
    model_id: str
    dataset: str
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    error: dict[str, Any] | None
    artifacts: list[Artifact]
    created_at: str
    started_at: str | None
    finished_at: str | None
    report_url: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        jid = str(d["id"])
        return cls(
            id=jid,
            status=str(d["status"]),
            stage=d.get("stage"),
            progress=float(d.get("progress") or 0.0),
            model_id=str(d.get("model_id", "")),
            dataset=str(d.get("dataset", "")),
            config=dict(d.get("config") or {}),
            metrics=d.get("metrics"),
            error=d.get("error"),
            artifacts=[
                Artifact(jid, a["name"], int(a["bytes"]), a["sha256"], a["url"])
                for a in d.get("artifacts") or []
            ],
            created_at=str(d.get("created_at", "")),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            report_url=d.get("report_url"),
            raw=dict(d),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def artifact(self, name: str = MODEL_FILE) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        have = ", ".join(a.name for a in self.artifacts) or "none"
        raise ClientError(f"job {self.id} has no artifact {name!r} (it has: {have})")


_CASTS: dict[str, type] = {"str": str, "int": int}


class _Record:
    """A record from the API's JSON (a frozen dataclass): the first field is required;
    other `str` / `int` fields default to "" / 0, the rest to None; `raw` keeps the
    whole object."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for i, f in enumerate(fields(cls)):  # type: ignore[arg-type]
            if f.name == "raw":
                values["raw"] = dict(d)
                continue
            value = d[f.name] if i == 0 else d.get(f.name)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            cast = _CASTS.get(kind)
            values[f.name] = value if cast is None else cast(cast() if value is None else value)
        return cls(**values)


@dataclass(frozen=True)
class _Upload(_Record):
    """An uploaded file's record: its id and the file's name."""

    id: str
    filename: str


@dataclass(frozen=True)
class Model(_Upload):
    family: str
    format: str
    edges: int
    params: int
    bytes: int
    sha256: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Dataset(_Upload):
    task: str
    n_train: int
    n_test: int
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Event(_Record):
    """A job event: ``kind`` status, stage, progress, log or webhook; ``seq`` 1, 2, ..."""

    seq: int
    kind: str
    stage: str | None
    progress: float | None
    loss: float | None
    message: str | None
    data: dict[str, Any] | None
    at: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def final(self) -> bool:
        """The event that put the job into its final status."""
        return self.kind == "status" and (self.data or {}).get("status") in FINAL_STATUSES
