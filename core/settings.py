"""One settings object for the API, the workers and the embedded mode, read from
``METACLUSTER_*`` environment variables.

Defaults give the embedded mode: everything (SQLite, broker, storage) under ``data_dir``,
which every command finds the same way (`discover_data_dir`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
DATABASE_FILE = "metacluster.db"


def state_file() -> Path:
    """Where `metacluster serve` records the data directory it used (per user)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "metacluster" / "data_dir"


def discover_data_dir(cwd: Path | None = None) -> Path:
    """The data directory when ``METACLUSTER_DATA_DIR`` is not set, found the same way
    by `serve`, `keys` and every other command, wherever they are run from:

    1. ``data/`` holding a database in the current directory or the nearest parent
       (a checkout's ``make run`` data, seen from any of its subfolders);
    2. the data directory the last `metacluster serve` of this user recorded, when it
       still holds a database (so `keys create` run elsewhere reaches that server);
    3. ``./data`` (a new one).
    """
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "data" / DATABASE_FILE).is_file():
            return folder / "data"
    try:
        recorded = Path(state_file().read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        recorded = None
    if recorded is not None and recorded.is_absolute() and (recorded / DATABASE_FILE).is_file():
        return recorded
    return here / "data"


def remember_data_dir(data_dir: Path) -> None:
    """Record `serve`'s data directory for `discover_data_dir` (best effort)."""
    try:
        path = state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(data_dir.resolve()), encoding="utf-8")
    except OSError:
        pass


class Settings(BaseSettings):
    """Service configuration; every field is overridable as ``METACLUSTER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="METACLUSTER_", extra="ignore")

    env: Literal["development", "production"] = "development"
    # Unset: `discover_data_dir` (nearest data/ with a database, else the last serve's,
    # else ./data), the same in every command.
    data_dir: Path = Field(default_factory=discover_data_dir)
    # None -> derived from data_dir in `_fill_defaults`, so one DATA_DIR moves everything.
    database_url: str | None = None
    broker_url: str | None = None
    storage_dir: Path | None = None
    # Where blobs live: file:///abs/path (default: storage_dir); other schemes are
    # storage backends registered in core.storage.
    storage_url: str | None = None
    # Local scratch space: multipart uploads are spooled and worker inputs copied here.
    scratch_dir: Path | None = None
    # The job row is the record of truth; Celery results are never read.
    result_backend: str | None = None
    max_upload_bytes: int = Field(default=256 * MIB, gt=0)
    max_deliveries: int = Field(default=3, ge=1)
    gpu_queue: str = "gpu"
    cpu_queue: str = "cpu"
    # Queue for jobs whose config says device "auto": None -> cpu_queue, which suits the
    # embedded mode; a deployment with GPU workers sets METACLUSTER_DEFAULT_QUEUE=gpu.
    default_queue: str | None = None
    # Redis re-delivers a message whose worker died after this many seconds; it must
    # exceed the longest job, or a running job is delivered to a second worker.
    broker_visibility_timeout_s: float = Field(default=6 * 3600.0, gt=0)
    # /readyz gives up on the broker after this many seconds.
    broker_timeout_s: float = Field(default=2.0, gt=0)
    # A job still queued, never delivered, this long after its last event lost its
    # enqueue (the API died between commit and send): workers send it again, checking
    # every requeue_interval_s (0 turns the check off). It must exceed the usual queue
    # wait, or a backlogged job gets an extra (harmless, dropped) message per period.
    requeue_after_s: float = Field(default=600.0, gt=0)
    requeue_interval_s: float = Field(default=60.0, ge=0)
    # Largest built-in data set (train + test samples) a job may ask for with options
    # such as `eq:xy?n_train=...` or `mnist1d?num_samples=...`: the API generates it
    # to learn its shape, so an unbounded count would stall or exhaust the API process.
    max_builtin_samples: int = Field(default=200_000, ge=1)
    # Upper bound of `limit` on list endpoints.
    max_page_size: int = Field(default=100, ge=1)
    # -- bounded resources (docs/reliability.md) --------------------------------------
    # A multipart request: its non-file form fields (count, each one's bytes) and its
    # whole body (files + fields + part headers) are bounded as it streams in.
    max_form_fields: int = Field(default=16, ge=1)
    max_form_field_bytes: int = Field(default=4096, ge=1)
    # Uncompressed size of an uploaded .npz (from its array headers, read before any
    # array is loaded): a small zip of zeros must not become gigabytes in memory.
    max_dataset_bytes: int = Field(default=1024 * MIB, gt=0)
    # A job still running this long after its first delivery started ends `failed`
    # with code `timeout`.
    job_timeout_s: float = Field(default=4 * 3600.0, gt=0)
    # Queued + running jobs one API key may have at once; more -> 429 with Retry-After.
    max_active_jobs_per_key: int = Field(default=20, ge=1)
    # Requests per second per API key (token bucket per API process), and its burst.
    rate_limit_per_s: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    # An API process remembers a verified key this long (0: never), sparing a database
    # round trip per request; a key revoked elsewhere stops working within this time.
    auth_cache_s: float = Field(default=2.0, ge=0)
    # Devices the workers have: a job asking for one that is not listed ("cuda" on a
    # CPU-only deployment) is refused by the dry run and by job creation. None: what
    # this process sees (cpu, plus cuda when torch finds a GPU): right for `serve`,
    # where API and worker share the machine; a deployment whose API runs without
    # the workers' GPUs sets METACLUSTER_WORKER_DEVICES=cpu,cuda.
    worker_devices: Annotated[list[str] | None, NoDecode] = None
    # -- one owner per job ---------------------------------------------------------------
    # A running job's lease: its worker renews it every lease_ttl_s / 4; another
    # delivery may take the job over only once it has expired.
    lease_ttl_s: float = Field(default=60.0, gt=0)

    @field_validator("worker_devices", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # METACLUSTER_WORKER_DEVICES=cpu,cuda (a JSON list is accepted too)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir}/metacluster.db"
        if self.broker_url is None:
            self.broker_url = f"sqla+sqlite:///{self.data_dir}/broker.db"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        if self.storage_url is None:
            self.storage_url = f"file://{self.storage_dir}"
        if self.scratch_dir is None:
            self.scratch_dir = self.data_dir / "tmp"
        if self.default_queue is None:
            self.default_queue = self.cpu_queue
        if self.env == "production" and self.database_url.startswith("sqlite"):
            # Several API replicas and workers cannot share one SQLite file safely.
            raise ValueError("METACLUSTER_DATABASE_URL must not be SQLite in production")
        return self

    @property
    def db_url(self) -> str:
        """The database URL (always set after validation)."""
        assert self.database_url is not None
        return self.database_url

    @property
    def broker(self) -> str:
        """The broker URL (always set after validation)."""
        assert self.broker_url is not None
        return self.broker_url

    @property
    def storage_scheme(self) -> str:
        """The scheme of `storage_url` (``file`` for the local directory)."""
        assert self.storage_url is not None
        return self.storage_url.split("://", 1)[0] if "://" in self.storage_url else "file"

    @property
    def storage_root(self) -> Path:
        """The local storage directory of a ``file://`` storage URL."""
        assert self.storage_url is not None and self.storage_dir is not None
        if self.storage_url.startswith("file://"):
            return Path(self.storage_url[len("file://") :])
        return self.storage_dir

    @property
    def scratch(self) -> Path:
        """The scratch directory (always set after validation)."""
        assert self.scratch_dir is not None
        return self.scratch_dir

    def available_devices(self) -> list[str]:
        """The devices a job may ask for (``worker_devices``, or what this process sees)."""
        if self.worker_devices is not None:
            return [d.strip() for d in self.worker_devices if d.strip()]
        devices = ["cpu"]
        try:
            import torch

            if torch.cuda.is_available():
                devices.append("cuda")
        except Exception:  # no torch, or a broken CUDA install: CPU only
            pass
        return devices

    def queue_for(self, device: str | None) -> str:
        """Queue a job goes to, from its config's ``device``."""
        if device is not None and device.startswith("cuda"):
            return self.gpu_queue
        if device == "cpu" or self.default_queue is None:
            return self.cpu_queue
        return self.default_queue


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests change env vars and call ``get_settings.cache_clear()``."""
    return Settings()
