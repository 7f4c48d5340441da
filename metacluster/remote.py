"""`metacluster remote ...`: drive a MetaCluster service from a shell or a CI pipeline.

    metacluster remote submit kan.pt --data digits --k 16 --wait --min-ratio 20 --max-drop 0.01
    metacluster remote status JOB | wait JOB | events JOB | download JOB | cancel JOB | jobs

The service's URL and API key come from ``--url`` / ``--api-key`` or from
``METACLUSTER_URL`` / ``METACLUSTER_API_KEY``. Progress goes to stderr, ``--json``
prints one JSON object on stdout. Exit codes a pipeline can gate on:

====  ==========================================================
0     done (a waited job succeeded and met the gates)
1     error (bad input, the service refused the request, unreachable)
2     usage error
3     the job failed
4     the job was cancelled
5     the job succeeded but missed a gate (--min-ratio, --max-drop)
6     --timeout ran out before the job finished (it keeps running)
====  ==========================================================
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from metacluster._output import finite, key_values, read_config_file
from metacluster.errors import ConfigError
from metacluster.filenames import MODEL_FILE

if TYPE_CHECKING:
    from metacluster.client import Client, Job

EXIT_OK = 0
EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_GATE = 5
EXIT_TIMEOUT = 6

F = TypeVar("F", bound=Callable[..., Any])


# -- gates ------------------------------------------------------------------------------------
def metric_drop(metrics: dict[str, Any]) -> float | None:
    """How much the compressed model is worse, as the engine's `max_drop` measures it:
    accuracy points lost (a fraction), or the relative increase of the RMSE."""
    before, after = metrics.get("before"), metrics.get("after")
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return None
    if metrics.get("metric") == "rmse":
        return (after - before) / max(abs(before), 1e-12)
    return float(before - after)


def check_gates(job: Job, min_ratio: float | None, max_drop: float | None) -> dict[str, Any]:
    """Whether a finished job passed the pipeline's gates, with the numbers."""
    metrics = job.metrics or {}
    ratio = metrics.get("ratio")
    drop = metric_drop(metrics)
    failures = []
    if min_ratio is not None and (not isinstance(ratio, int | float) or ratio < min_ratio):
        failures.append(f"ratio {_num(ratio)} is below --min-ratio {min_ratio:g}")
    if max_drop is not None and (drop is None or drop > max_drop):
        failures.append(f"metric drop {_num(drop)} is above --max-drop {max_drop:g}")
    return {
        "passed": not failures,
        "failures": failures,
        "ratio": ratio,
        "drop": drop,
        "min_ratio": min_ratio,
        "max_drop": max_drop,
    }


def exit_code(job: Job, gate: dict[str, Any] | None) -> int:
    if job.status == "failed":
        return EXIT_FAILED
    if job.status == "cancelled":
        return EXIT_CANCELLED
    if gate is not None and not gate["passed"]:
        return EXIT_GATE
    return EXIT_OK


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


# -- plumbing -----------------------------------------------------------------------------------
def _client(ctx: click.Context) -> Client:
    from metacluster.client import Client

    url, key = ctx.obj["url"], ctx.obj["api_key"]
    if not url:
        raise click.UsageError("no service URL: pass --url or set METACLUSTER_URL")
    if not key:
        raise click.UsageError("no API key: pass --api-key or set METACLUSTER_API_KEY")
    client = Client(url, key)
    ctx.call_on_close(client.close)
    return client


def _network_errors(fn: F) -> F:
    """Connection failures as one `error:` line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import httpx

        try:
            return fn(*args, **kwargs)
        except httpx.HTTPError as exc:
            url = click.get_current_context().obj.get("url")
            raise ConfigError(f"cannot talk to the service at {url}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def _print_json(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(finite(obj), allow_nan=False, default=str))


def _summary(job: Job) -> str:
    line = f"{job.id}  {job.status}"
    if job.stage and not job.finished:
        line += f"  {job.stage} {100 * job.progress:.0f}%"
    m = job.metrics or {}
    if job.succeeded and m:
        line += (
            f"  {m.get('metric')} {_num(m.get('before'))} -> {_num(m.get('after'))}"
            f"  bytes {m.get('bytes_before')} -> {m.get('bytes_after')}"
            f"  ratio {_num(m.get('ratio'))}  k {m.get('k')}"
        )
    if job.error:
        line += f"  error {job.error.get('code')}: {job.error.get('message')}"
    return line


def _show_job(job: Job, as_json: bool) -> None:
    if as_json:
        _print_json({"job": job.raw})
    else:
        click.echo(_summary(job))


@dataclass(frozen=True)
class _WaitOptions:
    """What `gate_options` reads: how to wait, where to save, which gates to check."""

    progress: bool | None
    timeout: float | None
    download: str | None
    min_ratio: float | None
    max_drop: float | None


def _finish(
    client: Client,
    job: Job | str,
    wait: _WaitOptions,
    *,
    as_json: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    """Wait for the job; print it, the gates and the download; exit with the pipeline code."""
    job = _wait(client, job, wait.timeout, wait.progress)
    gate = check_gates(job, wait.min_ratio, wait.max_drop) if job.succeeded else None
    saved = None
    if wait.download is not None and job.succeeded:
        saved = str(client.download(job, wait.download))
    code = exit_code(job, gate)
    if as_json:
        _print_json(
            {**(extra or {}), "job": job.raw, "gate": gate, "artifact": saved, "exit_code": code}
        )
    else:
        click.echo(_summary(job))
        if saved:
            click.echo(f"artifact: {saved}")
        for failure in (gate or {}).get("failures", []):
            click.echo(f"gate missed: {failure}", err=True)
    sys.exit(code)


def _wait(client: Client, job: Job | str, timeout: float | None, progress: bool | None) -> Job:
    from metacluster.client import WaitTimeout

    show = sys.stderr.isatty() if progress is None else progress
    try:
        return client.wait(job, timeout=timeout, progress=show)
    except WaitTimeout as exc:
        click.echo(f"error: {exc} (it keeps running; `metacluster remote wait` again)", err=True)
        sys.exit(EXIT_TIMEOUT)


def gate_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--progress, --timeout, --download, --min-ratio and --max-drop; the command gets
    them as one argument, ``wait`` (a `_WaitOptions`)."""

    @functools.wraps(command)
    def with_wait_options(
        *args: Any,
        progress: bool | None,
        timeout: float | None,
        download: str | None,
        min_ratio: float | None,
        max_drop: float | None,
        **kwargs: Any,
    ) -> Any:
        wait = _WaitOptions(progress, timeout, download, min_ratio, max_drop)
        return command(*args, wait=wait, **kwargs)

    fn = click.option(
        "--max-drop",
        type=float,
        default=None,
        help="Gate: largest metric drop (accuracy as a fraction, RMSE relative); "
        "exit 5 when missed.",
    )(with_wait_options)
    fn = click.option(
        "--min-ratio", type=float, default=None, help="Gate: smallest ratio; exit 5 when missed."
    )(fn)
    fn = click.option(
        "--download",
        "download",
        type=click.Path(),
        default=None,
        help="Save the artifact of a succeeded job here (file or folder).",
    )(fn)
    fn = click.option(
        "--timeout", type=float, default=None, help="Seconds to wait at most (exit 6 after)."
    )(fn)
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bar on stderr (default: when stderr is a terminal).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(
        fn
    )


# -- commands -------------------------------------------------------------------------------------
@click.group()
@click.option(
    "--url", envvar="METACLUSTER_URL", default=None, help="The service (env METACLUSTER_URL)."
)
@click.option(
    "--api-key",
    envvar="METACLUSTER_API_KEY",
    default=None,
    help="An API key (env METACLUSTER_API_KEY).",
)
@click.pass_context
def remote(ctx: click.Context, url: str | None, api_key: str | None) -> None:
    """Use a MetaCluster service: submit, follow, gate and download compression jobs.

    Exit codes: 0 done, 1 error, 2 usage, 3 job failed, 4 job cancelled, 5 gate
    missed, 6 timed out.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(url=url, api_key=api_key)


def _parse_k(text: str | None) -> int | list[int] | None:
    if text is None:
        return None
    try:
        ks = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"--k must be integers, got {text!r}") from None
    if not ks or min(ks) < 2:
        raise click.BadParameter(f"--k must be integers >= 2, got {text!r}")
    return ks[0] if len(ks) == 1 else ks


def _check_config(config: dict[str, Any]) -> None:
    """The config's own rules (method names, method options, every knob), checked here
    before anything is uploaded: the service applies the same `MetaClusterConfig`."""
    from metacluster.compress import MetaClusterConfig

    MetaClusterConfig.from_dict(config)


@remote.command()
@click.argument("model", nargs=-1, required=True)
@click.option(
    "--data", "data", required=True, help="Built-in (digits, eq:...), ds_... id, or a local .npz."
)
@click.option("--k", "k_text", default=None, help="Codebook size, or a list to sweep (4,8,16).")
@click.option("--target-ratio", type=float, default=None, help="Byte budget: K chosen per layer.")
@click.option("--max-bytes", type=int, default=None, help="Byte budget in bytes.")
@click.option("--method", default=None, help="A registered method (metacluster, kmeans, pq, ...).")
@click.option("--method-option", multiple=True, metavar="KEY=VALUE", help="Option of the method.")
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="Any MetaClusterConfig field."
)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="MetaClusterConfig JSON."
)
@click.option("--format", "fmt", default="auto", show_default=True, help="Checkpoint format.")
@click.option("--idempotency-key", default=None, help="Default: a fresh one per command.")
@click.option("--webhook-url", default=None, help="POST the job's events here (signed).")
@click.option(
    "--webhook-event",
    "webhook_events",
    multiple=True,
    type=click.Choice(["started", "stage", "succeeded", "failed", "cancelled"]),
    help="Events to send (repeat; default the final ones).",
)
@click.option("--dry-run", is_flag=True, help="Check model, data and config; queue nothing.")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it finishes.")
@gate_options
@json_option
@click.pass_context
@_network_errors
def submit(
    ctx: click.Context,
    model: tuple[str, ...],
    data: str,
    k_text: str | None,
    target_ratio: float | None,
    max_bytes: int | None,
    method: str | None,
    method_option: tuple[str, ...],
    settings: tuple[str, ...],
    config_file: str | None,
    fmt: str,
    idempotency_key: str | None,
    webhook_url: str | None,
    webhook_events: tuple[str, ...],
    dry_run: bool,
    wait_: bool,
    wait: _WaitOptions,
    as_json: bool,
) -> None:
    """Upload MODEL (and DATA when it is a file), start a job, optionally wait and gate.

    MODEL is a checkpoint file (a pykan checkpoint: its prefix or either file) or the
    id of an uploaded model (mdl_...).
    """
    k = _parse_k(k_text)
    if k is not None and (target_ratio is not None or max_bytes is not None):
        raise click.UsageError("give --k or a byte budget (--target-ratio / --max-bytes), not both")
    if (wait.min_ratio is not None or wait.max_drop is not None or wait.download) and not wait_:
        raise click.UsageError("--min-ratio, --max-drop and --download need --wait")
    config = read_config_file(config_file) if config_file is not None else {}
    config.update(key_values(settings, "--set"))
    if method_option:
        config["method_options"] = key_values(method_option, "--method-option")
    for key, value in (
        ("k", k),
        ("target_ratio", target_ratio),
        ("max_bytes", max_bytes),
        ("method", method),
    ):
        if value is not None:
            config[key] = value
    if isinstance(k, list) and wait.max_drop is not None:
        config["max_drop"] = wait.max_drop  # the sweep picks the smallest K within the same gate
    _check_config(config)
    client = _client(ctx)
    if len(model) == 1 and model[0].startswith("mdl_") and not Path(model[0]).exists():
        model_id = model[0]
    else:
        paths = [Path(m) for m in model]
        target: Any = paths[0] if len(paths) == 1 else paths
        uploaded = client.upload_model(target, format=fmt)
        model_id = uploaded.id
        click.echo(
            f"uploaded model {model_id} ({uploaded.family}, {uploaded.bytes} bytes)", err=True
        )
    dataset = data
    if Path(data).is_file():
        up = client.upload_dataset(data)
        dataset = up.id
        click.echo(f"uploaded dataset {dataset} ({up.task}, {up.n_train}+{up.n_test})", err=True)
    events = list(webhook_events) or None
    if dry_run:
        plan = client.create_job(
            model_id,
            dataset,
            config,
            dry_run=True,
            webhook_url=webhook_url,
            webhook_events=events,
        )
        if as_json:
            _print_json(plan)
        else:
            click.echo(f"valid: {plan.get('valid')}  queue: {plan.get('queue')}")
            for check in plan.get("checks", []):
                click.echo(
                    f"  {'ok ' if check.get('ok') else 'BAD'} {check.get('name')}: {check.get('detail')}"
                )
        return
    job = client.create_job(
        model_id,
        dataset,
        config,
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        webhook_events=events,
    )
    click.echo(f"job {job.id} {job.status} ({client.base_url}/v1/jobs/{job.id})", err=True)
    if not wait_:
        if as_json:
            _print_json({"job": job.raw})
        else:
            click.echo(job.id)
        return
    _finish(client, job, wait, as_json=as_json)


def _job_command(
    name: str | None = None, *options: Callable[[Any], Any]
) -> Callable[[Callable[..., Any]], click.Command]:
    """A `remote` command on one job: the JOB argument, `options`, --json, network errors."""

    def wrap(fn: Callable[..., Any]) -> click.Command:
        stack: list[Callable[[Any], Any]] = [
            click.argument("job_id", metavar="JOB"),
            *options,
            json_option,
            click.pass_context,
            _network_errors,
        ]
        for decorate in reversed(stack):
            fn = decorate(fn)
        return remote.command(name)(fn)

    return wrap


@_job_command()
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job: status, stage, progress, metrics, error."""
    _show_job(_client(ctx).get_job(job_id), as_json)


@_job_command("wait", gate_options)
def wait_cmd(ctx: click.Context, job_id: str, wait: _WaitOptions, as_json: bool) -> None:
    """Follow a job until it finishes; exit with the pipeline code (see `remote --help`)."""
    _finish(_client(ctx), job_id, wait, as_json=as_json)


@_job_command(
    None,
    click.option(
        "--follow/--no-follow", default=True, help="Live until the final event (default)."
    ),
    click.option("--after", type=int, default=0, help="Only events with a higher seq."),
)
def events(ctx: click.Context, job_id: str, follow: bool, after: int, as_json: bool) -> None:
    """Print a job's events (status, stage, progress, log, webhook) as they come."""
    seen = []
    for event in _client(ctx).events(job_id, after=after, follow=follow):
        if as_json:
            seen.append(event.raw)
            continue
        parts = [f"{event.seq:>5}", f"{event.kind:<8}", event.stage or "-"]
        if event.progress is not None:
            parts.append(f"{100 * event.progress:5.1f}%")
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4g}")
        parts.append(event.message or "")
        click.echo("  ".join(parts))
    if as_json:
        _print_json({"job": job_id, "events": seen})


@_job_command(
    "download",
    click.option("--name", default=MODEL_FILE, show_default=True, help="Which artifact."),
    click.option("--out", type=click.Path(), default=None, help="File or folder (default: here)."),
)
def download_cmd(
    ctx: click.Context, job_id: str, name: str, out: str | None, as_json: bool
) -> None:
    """Download an artifact of a job (sha256 checked)."""
    client = _client(ctx)
    job = client.get_job(job_id)
    artifact = job.artifact(name)
    path = client.download(artifact, out)
    result = {
        "job": job.id,
        "name": name,
        "path": str(path),
        "bytes": artifact.bytes,
        "sha256": artifact.sha256,
    }
    if as_json:
        _print_json(result)
    else:
        click.echo(str(path))


@_job_command()
def cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel a job (queued: at once; running: between two steps)."""
    _show_job(_client(ctx).cancel(job_id), as_json)


@remote.command()
@click.option(
    "--status",
    "status_",
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]),
    default=None,
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@click.pass_context
@_network_errors
def jobs(ctx: click.Context, status_: str | None, limit: int, as_json: bool) -> None:
    """List your jobs, newest first."""
    rows = []
    for job in _client(ctx).list_jobs(status=status_, page_size=min(limit, 100)):
        rows.append(job)
        if len(rows) >= limit:
            break
    if as_json:
        _print_json({"jobs": [j.raw for j in rows]})
    else:
        for job in rows:
            click.echo(_summary(job))


__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_GATE",
    "EXIT_TIMEOUT",
    "check_gates",
    "exit_code",
    "metric_drop",
    "remote",
]
