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

from pydantic import Field, SecretStr, field_validator, model_validator
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

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses a SQLite database (several processes share it).",
    )
    data_dir: Path = Field(
        default_factory=discover_data_dir,
        description="Where the embedded mode keeps everything: SQLite file, broker, storage; "
        "unset: the nearest `data/` with a database, else the last `serve`'s, else `./data` "
        "(the same in every command).",
    )
    # None -> derived from data_dir in `_fill_defaults`, so one DATA_DIR moves everything.
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default `sqlite:///$DATA_DIR/metacluster.db`, "
        "`postgresql+psycopg://...` in production.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker; default `sqla+sqlite:///$DATA_DIR/broker.db`, "
        "`redis://host:6379/0` in production.",
    )
    storage_dir: Path | None = Field(
        default=None, description="Local blob directory; default `$DATA_DIR/storage`."
    )
    storage_url: str | None = Field(
        default=None,
        description="Where blobs live: `file:///abs/path` (default: STORAGE_DIR) or "
        "`s3://bucket/prefix` (an S3-compatible object store, see the S3_* settings).",
    )
    scratch_dir: Path | None = Field(
        default=None,
        description="Local scratch space: upload spool and worker input copies; "
        "default `$DATA_DIR/tmp`.",
    )
    result_backend: str | None = Field(
        default=None,
        description="Unused: the job row is the record of truth, Celery results are never read.",
    )
    max_upload_bytes: int = Field(
        default=256 * MIB, gt=0, description="Largest upload (model files or dataset) in bytes."
    )
    max_deliveries: int = Field(
        default=3,
        ge=1,
        description="A job whose worker died this many times fails `too_many_deliveries`.",
    )
    gpu_queue: str = Field(default="gpu", description="Queue of jobs with device cuda/cuda:N.")
    cpu_queue: str = Field(default="cpu", description="Queue of jobs with device cpu.")
    default_queue: str | None = Field(
        default=None,
        description="Queue of jobs with device auto; default CPU_QUEUE (a deployment with "
        "GPU workers sets `gpu`).",
    )
    broker_visibility_timeout_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="Redis re-delivers a message whose worker died after this long; must "
        "exceed the longest job.",
    )
    broker_timeout_s: float = Field(
        default=2.0, gt=0, description="/readyz gives up on the broker after this long."
    )
    requeue_after_s: float = Field(
        default=600.0,
        gt=0,
        description="A job still queued, never delivered and quiet this long lost its "
        "enqueue: workers send it again.",
    )
    requeue_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="How often each worker looks for such jobs (0 turns it off).",
    )
    max_builtin_samples: int = Field(
        default=200_000,
        ge=1,
        description="Largest built-in data set (train + test samples) a job may ask for; "
        "the API generates it to learn its shape.",
    )
    max_page_size: int = Field(default=100, ge=1, description="Upper bound of `limit` on lists.")
    # -- bounded resources (docs/reliability.md) --------------------------------------
    max_form_fields: int = Field(
        default=16, ge=1, description="Non-file form fields one multipart request may have."
    )
    max_form_field_bytes: int = Field(
        default=4096, ge=1, description="Bytes of one non-file form field."
    )
    max_json_bytes: int = Field(
        default=1 * MIB,
        gt=0,
        description="Largest JSON request body (every route but the two uploads, which "
        "MAX_UPLOAD_BYTES bounds); larger: 413, refused before it is read past the limit.",
    )
    max_config_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Largest job `config` (as compact JSON) a job may store; larger: 413.",
    )
    inspect_processes: int = Field(
        default=1,
        ge=1,
        description="Child processes of each API process that inspect uploaded checkpoints "
        "(building a model takes about twice its size; the API itself never holds one). "
        "Each idles at about 230 MB RSS (torch); more concurrent model uploads wait.",
    )
    max_dataset_bytes: int = Field(
        default=1024 * MIB,
        gt=0,
        description="Uncompressed size of an uploaded .npz, from its array headers (read "
        "before any array is loaded): a small zip of zeros must not become gigabytes.",
    )
    job_timeout_s: float = Field(
        default=4 * 3600.0,
        gt=0,
        description="A job still running this long after its first delivery started ends "
        "`failed` with code `timeout`.",
    )
    max_active_jobs_per_key: int = Field(
        default=20,
        ge=1,
        description="Queued + running jobs one API key may have at once; more: 429 with "
        "Retry-After.",
    )
    rate_limit_per_s: float = Field(
        default=50.0, gt=0, description="Requests per second per API key (per API process)."
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Burst of that rate limit.")
    auth_cache_s: float = Field(
        default=2.0,
        ge=0,
        description="An API process remembers a verified key this long (0: never); a key "
        "revoked elsewhere stops working within this time.",
    )
    worker_devices: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Devices the workers have (`cpu,cuda`): a job asking for one not listed "
        "is refused by the dry run and job creation; unset: what this process sees (right "
        "for `serve`; a deployment whose API has no GPU sets `cpu,cuda`).",
    )
    lease_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="A running job's lease: its worker renews it every LEASE_TTL_S / 4; "
        "another delivery takes the job over only once it expired.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="`/metrics` answers only `Authorization: Bearer <this token>` (the "
        "operator's, not a tenant's API key); unset: `/metrics` is off (404).",
    )
    worker_heartbeat_s: float = Field(
        default=5.0,
        gt=0,
        description="Each worker records a heartbeat this often (a thread of its own, "
        "whatever job it runs); `/readyz` answers 503 when no worker's is newer than "
        "3 x this (in `serve`: when its worker process is not running).",
    )
    worker_restart_delay_s: float = Field(
        default=1.0,
        ge=0,
        description="`metacluster serve`: a worker that died is restarted after this "
        "long; more than 5 restarts in 300 s and serve exits with an error.",
    )
    public_url: str | None = Field(
        default=None,
        description="The API's address as clients reach it (`https://kan.example.com`), "
        "for the job links of MLflow runs (webhook payloads carry relative links).",
    )
    # -- live events --------------------------------------------------------------------
    events_poll_s: float = Field(
        default=0.5,
        gt=0,
        description="How often an open event stream (`text/event-stream`) looks for new "
        "events of its job.",
    )
    sse_heartbeat_s: float = Field(
        default=15.0,
        gt=0,
        description="An event stream sends a comment line after this long without an "
        "event, so proxies keep it open.",
    )
    shutdown_grace_s: int = Field(
        default=10,
        ge=0,
        description="`metacluster serve`: when stopping, open requests (event streams "
        "included) get this long before they are cut; clients resume streams with "
        "Last-Event-ID.",
    )
    # -- webhooks -------------------------------------------------------------------------
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback, private and link-local addresses "
        "(off: no server-side request forgery into the deployment's network).",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="A webhook delivery attempt gives up after this long."
    )
    webhook_max_attempts: int = Field(
        default=8,
        ge=1,
        description="Attempts of one webhook delivery before it is given up.",
    )
    webhook_retry_base_s: float = Field(
        default=5.0,
        gt=0,
        description="Backoff before the second attempt; it doubles per attempt.",
    )
    webhook_retry_max_s: float = Field(
        default=3600.0, gt=0, description="Longest wait between two attempts."
    )
    webhook_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often each worker's webhook sender looks for due deliveries.",
    )
    webhook_secret_grace_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="After a rotation the previous webhook secret signs too (a second "
        "signature) for this long.",
    )
    # -- retention ------------------------------------------------------------------------
    retention_days: float = Field(
        default=0.0,
        ge=0,
        description="Delete finished jobs (with their artifacts), models and datasets "
        "older than this many days; 0 keeps everything.",
    )
    retention_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="How often each worker runs the retention sweep (when RETENTION_DAYS > 0).",
    )
    # -- S3-compatible object storage (STORAGE_URL=s3://bucket/prefix) -----------------------
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible store (MinIO: `http://minio:9000`); unset: AWS.",
    )
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint that presigned download URLs name, when clients reach the "
        "store at another address than the service (default: S3_ENDPOINT_URL).",
    )
    s3_region: str = Field(default="us-east-1", description="Region of the bucket.")
    s3_access_key_id: str | None = Field(
        default=None, description="Access key; unset: boto3's usual chain (env, profile, role)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Secret key belonging to S3_ACCESS_KEY_ID."
    )
    s3_create_bucket: bool = Field(
        default=False, description="Create the bucket at start when it does not exist."
    )
    download_url_expires_s: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Downloads redirect to a presigned URL valid this long (object stores).",
    )
    # -- MLflow ---------------------------------------------------------------------------
    mlflow_uri: str | None = Field(
        default=None,
        description="Tracking URI: each succeeded job is logged as an MLflow run "
        "(needs the `mlflow` extra on the workers).",
    )
    mlflow_experiment: str = Field(
        default="metacluster", description="MLflow experiment of those runs."
    )

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


def reference_markdown() -> str:
    """The configuration reference: one table row per setting, from the fields above.

    The README holds this table between ``<!-- settings:begin -->`` and
    ``<!-- settings:end -->``; ``python scripts/settings_reference.py`` rewrites it and a
    test keeps the two equal.
    """
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if info.default_factory is not None:
            shown = "(found)"  # computed at start; the description says how
        elif default is None:
            shown = "(unset)"
        elif isinstance(default, bool):
            shown = "`1`" if default else "`0`"
        elif isinstance(default, Path):
            shown = f"`{'' if default.is_absolute() else './'}{default.as_posix()}`"
        elif isinstance(default, float) and default.is_integer():
            shown = f"`{int(default)}`"
        else:
            shown = f"`{default}`"
        text = " ".join((info.description or "").split()).replace("|", "\\|")
        lines.append(f"| `METACLUSTER_{name.upper()}` | {shown} | {text} |")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests change env vars and call ``get_settings.cache_clear()``."""
    return Settings()
