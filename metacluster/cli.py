"""The `metacluster` command: train, inspect, evaluate, compress and export KANs, run the service.

Every command takes `--json` (one JSON object on stdout, progress on stderr) and
answers bad input with one line `error: ...` and a non-zero exit status.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from metacluster._output import finite, key_values, read_config_file
from metacluster.errors import CancelledError, ConfigError, MetaClusterError

if TYPE_CHECKING:
    from tqdm import tqdm

    from metacluster.data import Dataset
    from metacluster.kan import KANModel

F = TypeVar("F", bound=Callable[..., Any])

# Exit statuses: 1 for bad input / failed work, 2 for command-line usage (click's
# convention), 130 for an interrupt (shell convention for SIGINT).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, status: int) -> NoReturn:
    # One line, whatever the message holds: scripts grep stderr for "error:".
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(status)


# click >= 8.2 raises this for a group called without a command; older clicks print
# the help themselves (then the name falls back to a class nothing raises).
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.UsageError,), {})
)


# Commands other packages add to `metacluster` (the service's `serve` and `keys`), by
# entry point: the library never imports them, and lists them without importing them.
PLUGIN_GROUP = "metacluster.commands"


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class _MetaClusterCLI(click.Group):
    """A click group that turns every user error into one `error:` line and loads
    plugin commands (entry points of `PLUGIN_GROUP`) when they are called."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = _plugins().get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except ImportError as exc:
            raise ConfigError(
                f"`metacluster {cmd_name}` needs the service ({exc.name or exc}); "
                "install it with: pip install 'metacluster[api]'"
            ) from None
        if not isinstance(loaded, click.Command):
            raise ConfigError(f"plugin command {cmd_name!r} is not a click command")
        return loaded

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:  # --help / --version
            sys.exit(exc.exit_code)
        except _NO_ARGS_IS_HELP as exc:  # bare `metacluster` / `metacluster keys`
            assert exc.ctx is not None
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, EXIT_USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code or EXIT_ERROR)
        except CancelledError as exc:
            _fail(str(exc), EXIT_INTERRUPTED)
        except MetaClusterError as exc:
            _fail(str(exc), EXIT_ERROR)
        except (click.exceptions.Abort, KeyboardInterrupt):
            _fail("interrupted", EXIT_INTERRUPTED)
        except OSError as exc:  # unwritable --out, full disk, ...
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
        except Exception as exc:  # a bug: still one line, traceback on request
            if os.environ.get("METACLUSTER_DEBUG"):
                traceback.print_exc()
            _fail(
                f"internal error ({type(exc).__name__}: {exc}); "
                "set METACLUSTER_DEBUG=1 for a traceback",
                EXIT_ERROR,
            )
        sys.exit(result if isinstance(result, int) else 0)


# -- output ---------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(finite(result), default=_json_default, allow_nan=False))
        return
    for key, value in result.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=_json_default)
        elif isinstance(value, float):
            value = f"{value:.6g}"
        click.echo(f"{key}: {value}")


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(
        fn
    )


def progress_option(fn: F) -> F:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bars on stderr (default: only when stderr is a terminal).",
    )(fn)


class _Bars:
    """progress(stage, step, total, loss) -> one tqdm bar per stage, on stderr."""

    def __init__(self, enabled: bool | None) -> None:
        self.disable = None if enabled is None else not enabled
        self.stage: str | None = None
        self.bar: tqdm[Any] | None = None

    def __call__(self, stage: str, step: int, total: int, loss: float | None) -> None:
        from tqdm import tqdm

        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, file=sys.stderr, disable=self.disable)
        self.bar.total = total
        self.bar.n = step
        if loss is not None and math.isfinite(loss):
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _reporter(enabled: bool | None) -> Any:  # _Bars or LogLines
    """Bars on a terminal; on a log or a pipe (stderr not a terminal) one line per stage
    start and end and a progress line at most every 10 s; nothing with --no-progress."""
    if enabled is None and not sys.stderr.isatty():
        from metacluster.compress.pipeline.progress import LogLines

        return LogLines(sys.stderr)
    return _Bars(enabled)


# -- argument parsing ---------------------------------------------------------------
def _int_list(text: str, what: str, minimum: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise click.BadParameter(f"{what} must be integers >= {minimum}, got {text!r}")
    return values


def _parse_widths(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    # conv families take head widths like "10"; build_model_for checks lengths
    return _int_list(value, "width")


def data_seed_option(fn: F) -> F:
    return click.option(
        "--data-seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed of built-in data sets (digits split, eq: samples); keep it equal across commands.",
    )(fn)


def _load_data(spec: str, seed: int = 0) -> Dataset:
    from metacluster.data import load_dataset

    return load_dataset(spec, seed=seed)


def _is_artifact(path: str) -> bool:
    from metacluster.artifact import is_artifact

    return Path(path).is_file() and is_artifact(path)


def _load_any(path: str, fmt: str, runtime: str = "dense") -> tuple[KANModel, str]:
    """(model, kind): artifacts rebuild with load_artifact (in `runtime`), the rest
    with load_model."""
    if _is_artifact(path):
        from metacluster.artifact import load_artifact

        return load_artifact(path, runtime), "artifact"  # type: ignore[return-value]
    from metacluster.formats import load_model

    return load_model(path, format=fmt), "model"


def _check_format(fmt: str) -> str:
    from metacluster.formats import FORMATS

    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unsupported format {fmt!r}; supported: auto, {', '.join(FORMATS)}")
    return fmt


# -- commands -------------------------------------------------------------------------
@click.group(cls=_MetaClusterCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metacluster", prog_name="metacluster")
def cli() -> None:
    """Compress Kolmogorov-Arnold Networks with MetaCluster."""


@cli.command()
@click.option("--data", "data_spec", required=True, help="digits, mnist1d, eq:<name> or a path.")
@click.option(
    "--family", required=True, help="bspline, pykan_bspline, rbf, chebyshev, fourier, ..."
)
@click.option("--width", "widths", required=True, callback=_parse_widths, help="e.g. 64,32,10")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Model file to write.")
@click.option("--lr", type=float, default=1e-2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Initialisation and batch order."
)
@click.option(
    "--grid-size", type=click.IntRange(min=1), default=None, help="Spline/RBF/Fourier grid."
)
@click.option(
    "--order", "spline_order", type=click.IntRange(min=0), default=None, help="Spline order."
)
@click.option("--degree", type=click.IntRange(min=0), default=None, help="Polynomial degree.")
@click.option("--channels", default=None, help="Conv families: channels per KAN conv, e.g. 8,16.")
@click.option("--input-shape", default=None, help="Conv families on flat data: C,H,W, e.g. 1,8,8.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@data_seed_option
@progress_option
@json_option
def train(
    data_spec: str,
    family: str,
    widths: list[int],
    epochs: int,
    out: str,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    grid_size: int | None,
    spline_order: int | None,
    degree: int | None,
    channels: str | None,
    input_shape: str | None,
    device: str,
    data_seed: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Train a KAN on a data set and save it in MetaCluster's format."""
    import torch

    from metacluster.formats import save_model
    from metacluster.training import build_model_for, train_model

    options: dict[str, Any] = {}
    for name, value in (
        ("grid_size", grid_size),
        ("spline_order", spline_order),
        ("degree", degree),
    ):
        if value is not None:
            options[name] = value
    if channels is not None:
        options["channels"] = _int_list(channels, "--channels")
    if input_shape is not None:
        options["input_shape"] = tuple(_int_list(input_shape, "--input-shape"))
    data = _load_data(data_spec, data_seed)
    torch.manual_seed(seed)  # model initialisation draws from the global generator
    model = build_model_for(data, family, widths, **options)
    bars = _reporter(progress)
    try:
        schedule: dict[str, Any] = {
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
        }
        result = train_model(
            model, data, weight_decay=weight_decay, progress=bars, device=device, **schedule
        )
    finally:
        bars.close()
    model.cpu()
    model.meta.update({"metric": result["metric"], "value": result["value"]})
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path)
    _emit(
        {
            "metric": result["metric"],
            "value": result["value"],
            "train_value": result["train_value"],
            "params": model.n_params(),
            "edges": model.n_edges(),
            "bytes": path.stat().st_size,
            "seconds": round(result["seconds"], 3),
            "family": family,
            "widths": widths,
            "epochs": epochs,
            "out": str(path),
        },
        as_json,
    )


@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--format", "fmt", default="auto", show_default=True, help="Checkpoint format.")
@json_option
def inspect(model_path: str, fmt: str, as_json: bool) -> None:
    """Describe a checkpoint: family, format, layers, edges, params, bytes."""
    if _is_artifact(model_path):
        from metacluster.artifact import load_artifact, read_manifest

        model = load_artifact(model_path)
        manifest, _ = read_manifest(model_path)
        info: dict[str, Any] = {
            "family": model.family,
            "format": "artifact",
            "layers": [
                {
                    "name": name,
                    "in": layer.in_features,
                    "out": layer.out_features,
                    "edges": layer.n_edges,
                    "coef_dim": layer.coef_dim,
                }
                for name, layer in model.kan_layers()
            ],
            "edges": model.n_edges(),
            "params": model.n_params(),
            "bytes": Path(model_path).stat().st_size,
            # what the artifact stores instead of the dense vectors above
            "method": manifest.get("method"),
            "source_format": model.meta.get("format"),
            "codebooks": [
                {"k": cb.get("k"), "edges": cb.get("n"), "bits": cb.get("b")}
                for cb in manifest.get("cb", [])
            ],
            "metrics": manifest.get("metrics"),
            "manifest_version": manifest.get("v"),
        }
        _emit(info, as_json)
        return
    from metacluster.formats import inspect_model

    _emit(dict(inspect_model(model_path, format=_check_format(fmt))), as_json)


@cli.command("eval")
@click.argument("model_path", metavar="MODEL_OR_ARTIFACT")
@click.option("--data", "data_spec", required=True, help="digits, mnist1d, eq:<name> or a path.")
@click.option("--format", "fmt", default="auto", show_default=True, help="Checkpoint format.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option(
    "--runtime",
    default="dense",
    show_default=True,
    help="Artifacts: dense (rebuilt vectors) or compressed (runs on the codebooks).",
)
@data_seed_option
@json_option
def eval_cmd(
    model_path: str,
    data_spec: str,
    fmt: str,
    split: str,
    runtime: str,
    data_seed: int,
    as_json: bool,
) -> None:
    """Evaluate a model or an artifact: accuracy (classification) or RMSE (regression)."""
    from metacluster.runtime import check_runtime
    from metacluster.training import evaluate

    check_runtime(runtime)
    if runtime != "dense" and not _is_artifact(model_path):
        raise ConfigError(f"--runtime {runtime} needs an artifact (.mcz); {model_path} is not one")
    model, kind = _load_any(model_path, _check_format(fmt), runtime)
    data = _load_data(data_spec, data_seed)
    metric, value = evaluate(model, data, split=split)
    n = data.n_test if split == "test" else data.n_train
    _emit(
        {"metric": metric, "value": value, "split": split, "n": n, "kind": kind}
        | ({"runtime": runtime} if kind == "artifact" else {}),
        as_json,
    )


def _compress_config(
    config_file: str | None, overrides: dict[str, Any]
) -> Any:  # MetaClusterConfig; Any keeps torch out of import time
    from metacluster.compress import MetaClusterConfig

    base = read_config_file(config_file) if config_file is not None else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return MetaClusterConfig.from_dict(base)
    except TypeError as exc:  # unknown key in the config file
        raise ConfigError(f"bad compression config: {exc}") from None


def _method_names() -> list[str]:
    from metacluster.compress import method_names

    return method_names()


class _MethodChoice(click.Choice):  # type: ignore[type-arg]
    """--method's choices: the registered methods, read when the option is parsed."""

    def __init__(self) -> None:
        super().__init__([])

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        self.choices = tuple(_method_names())
        return super().convert(value, param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        # click >= 8.2 passes ctx (by keyword); older clicks call get_metavar(param).
        return "[" + "|".join(_method_names()) + "]"


@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_spec", required=True, help="digits, mnist1d, eq:<name> or a path.")
@click.option(
    "--k",
    "k_text",
    default=None,
    help="Codebook size, or a list (4,8,16,32) to sweep (default 16, or the --config's).",
)
@click.option(
    "--target-ratio",
    type=float,
    default=None,
    help="A byte budget: the artifact at most bytes_before / R; K is chosen per layer.",
)
@click.option(
    "--max-bytes", type=int, default=None, help="A byte budget in bytes; K is chosen per layer."
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Artifact to write.")
@click.option("--format", "fmt", default="auto", show_default=True, help="Checkpoint format.")
@click.option("--d-emb", type=int, default=None, help="Edge embedding size (1..4).")
@click.option("--mode", type=click.Choice(["post_hoc", "from_scratch"]), default=None)
@click.option("--scope", type=click.Choice(["per_layer", "global"]), default=None)
@click.option("--codebook-dtype", type=click.Choice(["float32", "float16"]), default=None)
@click.option(
    "--epochs", "meta_epochs", type=click.IntRange(min=0), default=None, help="Meta epochs."
)
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=None)
@click.option("--max-drop", type=float, default=None, help="Sweep: allowed metric drop.")
@click.option(
    "--method",
    type=_MethodChoice(),
    default=None,
    help="A registered compression method; the first listed is the default (see `metacluster "
    "methods`).",
)
@click.option(
    "--method-option",
    "method_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the method, e.g. --method pq --method-option m=3 --method-option bits=2.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="MetaClusterConfig as JSON; flags override it.",
)
@click.option(
    "--effort",
    type=click.Choice(["fast", "default", "best"]),
    default=None,
    help="Step budgets of the stages: fast (a CI smoke run), default, best.",
)
@click.option(
    "--time-budget",
    "time_budget_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Plan the stages' steps to finish within this many seconds on this machine.",
)
@click.option(
    "--baselines/--no-baselines",
    default=None,
    help="Also run the baselines (scalar, PQ, int4, int8) on the same byte axis (default off).",
)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="auto (default), cpu or cuda.")
@data_seed_option
@progress_option
@json_option
def compress(
    model_path: str,
    data_spec: str,
    k_text: str | None,
    target_ratio: float | None,
    max_bytes: int | None,
    out: str,
    fmt: str,
    d_emb: int | None,
    mode: str | None,
    scope: str | None,
    codebook_dtype: str | None,
    meta_epochs: int | None,
    finetune_epochs: int | None,
    max_drop: float | None,
    method: str | None,
    method_option: tuple[str, ...],
    config_file: str | None,
    effort: str | None,
    time_budget_s: float | None,
    baselines: bool | None,
    seed: int | None,
    device: str | None,
    data_seed: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Compress a KAN into a codebook artifact and report metric, bytes and ratio."""
    from metacluster.workflow import compress_file

    ks = _int_list(k_text, "--k", minimum=2) if k_text is not None else None
    if ks is not None and (target_ratio is not None or max_bytes is not None):
        raise click.UsageError("give --k or a byte budget (--target-ratio / --max-bytes), not both")
    config = _compress_config(
        config_file,
        {
            "k": None if ks is None else ks[0] if len(ks) == 1 else ks,
            "target_ratio": target_ratio,
            "max_bytes": max_bytes,
            "method": method,
            "method_options": key_values(method_option, "--method-option") or None,
            "d_emb": d_emb,
            "mode": mode,
            "scope": scope,
            "codebook_dtype": codebook_dtype,
            "meta_epochs": meta_epochs,
            "finetune_epochs": finetune_epochs,
            "max_drop": max_drop,
            "effort": effort,
            "time_budget_s": time_budget_s,
            "baselines": baselines,
            "seed": seed,
            "device": device,
        },
    )
    bars = _reporter(progress)
    start = time.perf_counter()
    try:
        report = compress_file(
            model_path,
            data_spec,
            config,
            out,
            format=_check_format(fmt),
            data_seed=data_seed,
            progress=bars,
        )
    finally:
        bars.close()
    result = report.to_dict()
    result["out"] = str(Path(out))
    result["seconds"] = round(time.perf_counter() - start, 3)
    if as_json:
        _emit(result, True)
    else:
        _print_summary(result)


def _print_summary(r: dict[str, Any]) -> None:
    """The human-readable compress report: headline, byte breakdown, one line per layer."""

    def value(v: float) -> str:
        return f"{100 * v:.2f}%" if r["metric"] == "accuracy" else f"{v:.4g}"

    click.echo(
        f"{r['metric']}: {value(r['before'])} -> {value(r['after'])}  ({r['method']}, K={r['k']})"
    )
    click.echo(
        f"bytes: {r['bytes_before']:,} -> {r['bytes_after']:,}  ratio {r['ratio']:.1f}x "
        f"(param ratio {r['param_ratio']:.1f}x)  -> {r['out']}"
    )
    parts = r.get("bytes_breakdown") or {}
    click.echo("breakdown: " + ", ".join(f"{k} {v:,}" for k, v in parts.items()))
    for layer in r.get("layers", []):
        k = "/".join(str(v) for v in layer["k"]) or "-"
        click.echo(
            f"  {layer['name']:<16} {layer['mode']:<8} K={k:<6} edges {layer['edges']:>8,}  "
            f"bytes {layer['bytes']:>8,}  coef err {layer['coef_rel_error']:.3f}  "
            f"function err {layer['function_rel_error']:.3f}"
        )
    if r.get("recommended_k") is not None and r.get("sweep"):
        click.echo(
            f"sweep: recommended K={r['recommended_k']} of {[row['k'] for row in r['sweep']]}"
        )
    click.echo(
        f"seconds: {r['seconds']}  stages: " + ", ".join(f"{k} {v}" for k, v in r["stages"].items())
    )
    sched = r.get("schedule") or {}
    if sched:
        steps = ", ".join(
            f"{name} {e['steps']}/{e['epoch_steps']} steps"
            + (
                f" ({e.get('stopped') or e['capped']})"
                if e.get("stopped") or e.get("capped")
                else ""
            )
            for name, e in (sched.get("stages") or {}).items()
        )
        click.echo(
            f"effort {sched.get('effort')}: {steps or 'no training stage'}; baselines {sched.get('baselines')}"
        )


@cli.command("methods")
@json_option
def methods_cmd(as_json: bool) -> None:
    """List the registered compression methods and their options."""
    import dataclasses

    from metacluster.compress import get_method, method_names

    rows: list[dict[str, Any]] = []
    for name in method_names():
        m = get_method(name)
        options = {f.name: f.default for f in dataclasses.fields(m.options)}
        rows.append({"name": name, "summary": m.summary, "uses_k": m.uses_k, "options": options})
    if as_json:
        _emit({"methods": rows}, True)
        return
    for row in rows:
        opts = " ".join(f"{k}={v}" for k, v in row["options"].items())
        click.echo(f"{row['name']:<12} {row['summary']}" + (f"  [{opts}]" if opts else ""))


@cli.command()
@click.argument("source", metavar="ARTIFACT")
@click.option("--to", "to", required=True, help="Target library layout, e.g. efficient-kan, pykan.")
@click.option("--out", type=click.Path(), required=True, help="Checkpoint path (pykan: prefix).")
@click.option(
    "--dense", is_flag=True, help="onnx: the dense graph instead of the codebook (Gather) graph."
)
@click.option(
    "--input-shape", default=None, help="onnx: per-sample input shape, e.g. 1,28,28 (conv models)."
)
@json_option
def export(
    source: str, to: str, out: str, dense: bool, input_shape: str | None, as_json: bool
) -> None:
    """Write a dense checkpoint of an artifact (or model) in a library's own layout, or
    an artifact as an ONNX graph (--to onnx)."""
    from metacluster.formats import FORMATS, export_model

    if to == "onnx":
        _emit(_export_onnx(source, out, dense, input_shape), as_json)
        return
    if to not in FORMATS:
        supported = ", ".join([*FORMATS, "onnx"])
        raise ConfigError(f"unsupported export format {to!r}; supported: {supported}")
    model, kind = _load_any(source, "auto")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = export_model(model, to, path)
    _emit(
        {
            "format": to,
            "kind": kind,
            "out": str(path),
            "files": [str(f) for f in files],
            "bytes": sum(Path(f).stat().st_size for f in files),
        },
        as_json,
    )


def _export_onnx(source: str, out: str, dense: bool, input_shape: str | None) -> dict[str, Any]:
    if not _is_artifact(source):
        raise ConfigError(f"--to onnx needs an artifact (.mcz); {source} is not one")
    from metacluster.artifact import load_artifact
    from metacluster.runtime.onnx_export import export_onnx

    shape = None
    if input_shape is not None:
        try:
            shape = [int(d) for d in input_shape.split(",")]
        except ValueError:
            raise ConfigError(
                f"--input-shape must be integers like 1,28,28, got {input_shape!r}"
            ) from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    model = load_artifact(source, "dense" if dense else "compressed")
    return export_onnx(model, out, input_shape=shape)


@cli.group("data")
def data_group() -> None:
    """Built-in data sets."""


@data_group.command("list")
@json_option
def data_list(as_json: bool) -> None:
    """List the built-in data sets and equation tasks."""
    from metacluster.data import BUILTIN_DATASETS, list_equations

    equations = list_equations()
    if as_json:
        _emit({"builtin": list(BUILTIN_DATASETS), "equations": equations}, True)
        return
    click.echo("digits     sklearn 8x8 digits, 64 inputs, 10 classes")
    click.echo("mnist1d    MNIST-1D generated locally, 40 inputs, 10 classes")
    for eq in equations:
        click.echo(f"eq:{eq['name']:<22} {eq['n_vars']:>3} inputs  {eq['formula']}")


@cli.command("report")
@click.argument("source", metavar="ARTIFACT_OR_REPORT_JSON")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write."
)
@click.option("--title", default=None, help="Heading of the page.")
@json_option
def report_cmd(source: str, out_dir: str, title: str | None, as_json: bool) -> None:
    """Draw a compression report: report.html (self-contained) and its PNGs.

    SOURCE is a report JSON (`metacluster compress --json` output, a job's report.json)
    or an artifact (then only what the artifact holds: bytes, codebook functions and
    the stored edge vectors, no sweep, baselines or errors against the original).
    """
    from metacluster.reporting import load_report, render_report

    rendered = render_report(load_report(source), out_dir, title=title)
    _emit(
        {
            "html": str(rendered.html),
            "images": {name: str(path) for name, path in rendered.images.items()},
        },
        as_json,
    )


# `metacluster remote ...`: the service's client commands (httpx is imported when one runs).
from metacluster.remote import remote as _remote  # noqa: E402

cli.add_command(_remote)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="metacluster")


if __name__ == "__main__":
    main()
