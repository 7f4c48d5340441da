"""Reports with pictures: a compression report (JSON) drawn as PNGs and one HTML page.

`render_report(report, out_dir)` writes, with matplotlib's Agg backend (no display;
``pip install 'metacluster[report]'``):

- ``pareto.png``: the metric against the artifact's bytes for every K (or budget)
  tried, the Pareto frontier through them, the baselines (scalar clustering, PQ,
  int4, int8) on the same axes, and the original model;
- ``bytes.png``: the bytes of each KAN layer by kind (codebooks, indices, grids,
  dense), beside the whole file's manifest and container;
- ``errors.png``: each layer's relative coefficient and function error;
- ``codebooks.png``: the K shared edge functions of each codebook, drawn on the
  layer's input range (the functions a KAN user reads);
- ``projection.png``: each layer's edge vectors in 2D (PCA) before and after the
  meta-learner (or the method's own training stage), coloured by the cluster each
  edge joined;
- ``report.html``: the numbers and all of the above, self-contained (images inline).

The report is `CompressionReport.to_dict()` (``metacluster compress --json``, a job's
``report.json`` or its ``metrics``); sections whose keys are missing are left out.
`report_from_artifact` rebuilds what an artifact alone can show.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metacluster.errors import ConfigError, InputError
from metacluster.filenames import REPORT_HTML

PLOTS = ("pareto", "bytes", "errors", "codebooks", "projection")
PAYLOAD_KINDS = ("codebooks", "indices", "grids", "dense")
FILE_KINDS = ("manifest", "container")
_COLOURS = {
    "codebooks": "#4C72B0",
    "indices": "#DD8452",
    "grids": "#55A868",
    "dense": "#C44E52",
    "manifest": "#8172B3",
    "container": "#937860",
}
# At most this many layers get their own panel in the per-layer figures.
MAX_PANELS = 8


@dataclass
class RenderedReport:
    html: Path
    images: dict[str, Path] = field(default_factory=dict)

    def files(self) -> list[Path]:
        return [self.html, *self.images.values()]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "reports with plots need matplotlib: pip install 'metacluster[report]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _kib(n: Any) -> str:
    if not isinstance(n, int | float):
        return "–"
    return f"{n:,.0f} B" if n < 10_000 else f"{n / 1024:,.1f} KiB"


# -- the figures ---------------------------------------------------------------------------
def _pareto(plt: Any, r: Mapping[str, Any]) -> Any | None:
    sweep = [p for p in r.get("sweep") or [] if _point(p)]
    if not sweep and _point(r):
        sweep = [{"k": r.get("k"), "bytes_after": r["bytes_after"], "after": r["after"]}]
    baselines = [b for b in r.get("baselines") or [] if _point(b)]
    if not sweep and not baselines:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    xs = [p["bytes_after"] for p in sweep]
    ax.scatter(xs, [p["after"] for p in sweep], s=36, color="#4C72B0", zorder=3, label=_method(r))
    for p in sweep:
        ax.annotate(
            f"K={p.get('k')}",
            (p["bytes_after"], p["after"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    front = _frontier([*sweep, *baselines], higher_is_better=r.get("metric") != "rmse")
    if len(front) > 1:
        ax.plot(
            [p["bytes_after"] for p in front],
            [p["after"] for p in front],
            "--",
            color="#999999",
            lw=1,
            zorder=1,
            label="Pareto frontier",
        )
    markers = "sD^vP*X"
    for i, b in enumerate(baselines):
        label = b["method"] + "".join(f" {k}={v}" for k, v in (b.get("options") or {}).items())
        ax.scatter(
            [b["bytes_after"]],
            [b["after"]],
            marker=markers[i % len(markers)],
            s=40,
            zorder=3,
            label=label,
        )
    before, bytes_before = r.get("before"), r.get("bytes_before")
    if isinstance(before, int | float) and isinstance(bytes_before, int | float):
        ax.axhline(before, color="#55A868", lw=1, label=f"original ({_kib(bytes_before)})")
    chosen = r.get("k")
    for p in sweep:
        if p.get("k") == chosen and p["bytes_after"] == r.get("bytes_after"):
            ax.scatter(
                [p["bytes_after"]],
                [p["after"]],
                s=140,
                facecolors="none",
                edgecolors="#C44E52",
                lw=1.5,
                zorder=4,
                label="chosen",
            )
    ax.set_xscale("log")
    ax.set_xlabel("artifact bytes (log scale)")
    ax.set_ylabel(f"test {r.get('metric', 'metric')}")
    ax.set_title("Metric against bytes: every K tried and the baselines")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _point(p: Any) -> bool:
    return (
        isinstance(p, Mapping)
        and isinstance(p.get("bytes_after"), int | float)
        and isinstance(p.get("after"), int | float)
        and p["bytes_after"] > 0
    )


def _frontier(points: Sequence[Mapping[str, Any]], *, higher_is_better: bool) -> list[Any]:
    """The points no other point beats on both bytes (fewer) and metric."""
    sign = 1.0 if higher_is_better else -1.0
    best = -math.inf
    out = []
    for p in sorted(points, key=lambda q: (q["bytes_after"], -sign * q["after"])):
        if sign * p["after"] > best:
            best = sign * p["after"]
            out.append(p)
    return out


def _method(r: Mapping[str, Any]) -> str:
    from metacluster.compress.spec.options import UNRECORDED_METHOD

    return str(r.get("method") or UNRECORDED_METHOD)


def _layers(r: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [layer for layer in r.get("layers") or [] if isinstance(layer, Mapping)]


def _bytes(plt: Any, r: Mapping[str, Any]) -> Any | None:
    layers = _layers(r)
    total = r.get("bytes_breakdown") or {}
    if not layers and not total:
        return None
    names = [str(layer.get("name") or f"layer {i}") for i, layer in enumerate(layers)]
    rows = [dict(layer.get("bytes_breakdown") or {}) for layer in layers]
    file_row = {k: total.get(k, 0) for k in FILE_KINDS if total.get(k)}
    if file_row:
        names.append("file (manifest, container)")
        rows.append(file_row)
    if not any(float(v or 0) for row in rows for v in row.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(names) + 2.0))
    left = [0.0] * len(names)
    for kind in (*PAYLOAD_KINDS, *FILE_KINDS):
        widths = [float(row.get(kind, 0)) for row in rows]
        if any(widths):
            ax.barh(names, widths, left=left, color=_COLOURS[kind], label=kind)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, value in enumerate(left):
        ax.text(value, y, f" {_kib(int(value))}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bytes")
    ax.set_title(f"Where the {_kib(r.get('bytes_after'))} of the artifact go")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=6, frameon=False)
    ax.set_xlim(0, max(left or [1]) * 1.25)
    return fig


def _errors(plt: Any, r: Mapping[str, Any]) -> Any | None:
    layers = [
        layer
        for layer in _layers(r)
        if isinstance(layer.get("coef_rel_error"), int | float)
        or isinstance(layer.get("function_rel_error"), int | float)
    ]
    if not layers:
        return None
    names = [str(layer.get("name")) for layer in layers]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.38
    pos = list(range(len(names)))
    for offset, key, label, colour in (
        (-width / 2, "coef_rel_error", "coefficients", "#4C72B0"),
        (width / 2, "function_rel_error", "edge functions", "#DD8452"),
    ):
        values = [float(layer.get(key) or 0.0) for layer in layers]
        ax.bar([p + offset for p in pos], values, width, label=label, color=colour)
    ax.set_xticks(pos, names, rotation=20 if len(names) > 4 else 0, fontsize=8)
    ax.set_ylabel("relative error ‖Δ‖ / ‖original‖")
    ax.set_title("Per-layer error of the compressed model")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _codebooks(plt: Any, r: Mapping[str, Any]) -> Any | None:
    funcs = {
        name: f
        for name, f in (r.get("codebook_functions") or {}).items()
        if isinstance(f, Mapping) and f.get("x") and f.get("curves")
    }
    if not funcs:
        return None
    names = list(funcs)[:MAX_PANELS]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, name in zip(axes.flat, names, strict=False):
        x, curves = funcs[name]["x"], funcs[name]["curves"]
        for i, curve in enumerate(curves):
            ax.plot(x, curve, color=cmap(i % 20), lw=1.2)
        ax.set_title(f"{name}: K={len(curves)} shared functions", fontsize=9)
        ax.set_xlabel("input", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("The codebooks' edge functions: every edge of a layer is one of these")
    return fig


def _projection(plt: Any, r: Mapping[str, Any]) -> Any | None:
    proj = {
        name: p
        for name, p in (r.get("projection") or {}).items()
        if isinstance(p, Mapping) and (p.get("before") or p.get("after"))
    }
    if not proj:
        return None
    names = list(proj)[:MAX_PANELS]
    fig, axes = plt.subplots(len(names), 2, figsize=(8, 3.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        p = proj[name]
        clusters = p.get("cluster") or []
        for col, key in enumerate(("before", "after")):
            ax = axes[row][col]
            points = p.get(key) or []
            if not points:
                ax.axis("off")
                continue
            xs, ys = [q[0] for q in points], [q[1] for q in points]
            colours = clusters if len(clusters) == len(points) else None
            ax.scatter(xs, ys, c=colours, cmap="tab20", s=9, alpha=0.8, linewidths=0)
            trained = (
                "after the meta-learner"
                if _method(r) == "metacluster"
                else f"after {_method(r)}'s training"
            )
            what = "original vectors" if key == "before" else trained
            ax.set_title(f"{name}: {what}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
    fig.suptitle("Edge vectors in 2D (PCA of the original), coloured by cluster")
    return fig


_FIGURES: dict[str, Callable[[Any, Mapping[str, Any]], Any | None]] = {
    "pareto": _pareto,
    "bytes": _bytes,
    "errors": _errors,
    "codebooks": _codebooks,
    "projection": _projection,
}


def render_plots(report: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write the PNGs the report's keys allow; returns {name: path}."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    for name, draw in _FIGURES.items():
        fig = draw(plt, report)
        if fig is None:
            continue
        try:
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110, format="png", metadata={"Software": None})
            images[name] = path
        finally:
            plt.close(fig)
    return images


# -- the page ------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:64em;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid
#ddd;padding-bottom:.2em}table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .8em;
border-bottom:1px solid #eee;text-align:right}th:first-child,td:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;
padding:.6em 1em;min-width:9em}.card b{display:block;font-size:1.35em}img{max-width:100%;
height:auto;border:1px solid #eee}.muted{color:#777}code{background:#f5f5f5;padding:0 .2em}
"""

_CAPTIONS = {
    "pareto": "Test metric against artifact bytes for every K (or budget) tried, with the "
    "baselines on the same axes and the Pareto frontier through all of them.",
    "bytes": "Bytes of each KAN layer by kind, and the file's own manifest and container.",
    "errors": "Relative error of each layer's coefficients and of its edge functions.",
    "codebooks": "The K shared edge functions of each layer's codebook, on its input range.",
    "projection": "Edge vectors before and after the method's training stage (the "
    "meta-learner for metacluster) in the original's principal plane, coloured by the "
    "codebook entry each edge took.",
}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _row(*cells: Any, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def _validation_text(r: Mapping[str, Any]) -> str:
    """What the validation numbers are: the metric before and after compression on rows
    held out of the training data, which the run's choices read (never the test set)."""
    metric = str(r.get("metric", "metric"))
    share = (r.get("config") or {}).get("val_fraction")
    rows = (
        f"{share:.0%} of the training data (the training data itself when that is under 64 samples)"
        if isinstance(share, int | float) and share > 0
        else "the training data itself"
    )
    return (
        f"Validation {metric}, before → after compression: {_num(r.get('val_before'))} → "
        f"{_num(r.get('val_after'))}, on {rows}, held out of the compression's own training. "
        "Early stopping, the K recommendation and the byte budget's allocation read it; "
        "the test set above is never used for them. The original model may have been "
        "trained on these rows, so a perfect score (1 → 1) is common"
    )


def report_html(
    report: Mapping[str, Any], images: Mapping[str, Path], *, title: str | None = None
) -> str:
    """The self-contained page: numbers, tables and every image inline."""
    r = report
    esc = html.escape
    heading = title or "MetaCluster compression report"
    metric = str(r.get("metric", "metric"))
    cards = [
        (metric, f"{_num(r.get('before'))} → {_num(r.get('after'))}"),
        ("bytes", f"{_kib(r.get('bytes_before'))} → {_kib(r.get('bytes_after'))}"),
        ("ratio (file bytes)", f"{_num(r.get('ratio'), 3)}×"),
        ("parameter ratio", f"{_num(r.get('param_ratio'), 3)}×"),
        ("K", _num(r.get("k"))),
        ("method", _method(r)),
    ]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(heading)}</h1>",
    ]
    subtitle = " · ".join(
        esc(str(x))
        for x in (
            r.get("mode"),
            r.get("device"),
            f"seed {r.get('seed')}" if r.get("seed") is not None else None,
            r.get("sha256") and f"sha256 {str(r.get('sha256'))[:16]}…",
        )
        if x
    )
    if subtitle:
        parts.append(f"<p class=muted>{subtitle}</p>")
    parts.append("<div class=cards>")
    parts += [f"<div class=card>{esc(k)}<b>{esc(v)}</b></div>" for k, v in cards]
    parts.append("</div>")
    val = (r.get("val_before"), r.get("val_after"))
    if any(isinstance(v, int | float) for v in val):
        parts.append(
            f"<p>{esc(_validation_text(r))}"
            + (f"; byte budget {esc(_kib(r.get('budget_bytes')))}" if r.get("budget_bytes") else "")
            + "</p>"
        )
    for name in PLOTS:
        if name in images:
            parts.append(f"<h2>{esc(name.capitalize())}</h2><p>{esc(_CAPTIONS[name])}</p>")
            parts.append(f'<img alt="{esc(name)}" src="{_data_uri(images[name])}">')
    sweep = r.get("sweep") or []
    if sweep or r.get("baselines"):
        parts.append("<h2>Every run</h2><table>")
        parts.append(
            _row("run", "K", "bytes", "ratio", f"test {metric}", "validation", header=True)
        )
        for p in sweep:
            parts.append(
                _row(
                    _method(r),
                    p.get("k"),
                    _num(p.get("bytes_after")),
                    _num(p.get("ratio"), 3),
                    _num(p.get("after")),
                    _num(p.get("val_after")),
                )
            )
        for b in r.get("baselines") or []:
            opts = " ".join(f"{k}={v}" for k, v in (b.get("options") or {}).items())
            ratio = None
            if isinstance(r.get("bytes_before"), int | float) and b.get("bytes_after"):
                ratio = r["bytes_before"] / b["bytes_after"]
            parts.append(
                _row(
                    f"{b.get('method')} {opts}".strip(),
                    b.get("k") or "–",
                    _num(b.get("bytes_after")),
                    _num(ratio, 3),
                    _num(b.get("after")),
                    "–",
                )
            )
        parts.append("</table>")
    layers = _layers(r)
    if layers:
        parts.append("<h2>Layers</h2><table>")
        parts.append(
            _row(
                "layer",
                "edges",
                "coef dim",
                "stored as",
                "K",
                "coef error",
                "function error",
                "bytes",
                header=True,
            )
        )
        for layer in layers:
            ks = layer.get("k")
            parts.append(
                _row(
                    layer.get("name"),
                    _num(layer.get("edges")),
                    layer.get("coef_dim"),
                    layer.get("mode"),
                    ", ".join(map(str, ks)) if isinstance(ks, list) else ks,
                    _num(layer.get("coef_rel_error"), 3),
                    _num(layer.get("function_rel_error"), 3),
                    _num(layer.get("bytes")),
                )
            )
        parts.append("</table>")
    breakdown = r.get("bytes_breakdown") or {}
    stages = r.get("stages") or {}
    if breakdown or stages:
        parts.append("<h2>Bytes and time</h2><table>")
        parts.append(_row("bytes by kind", "", header=True))
        parts += [_row(k, _num(v)) for k, v in breakdown.items()]
        parts.append("</table><table>")
        parts.append(_row("stage", "seconds", header=True))
        parts += [_row(k, _num(v, 3)) for k, v in stages.items()]
        parts.append("</table>")
    config = r.get("config")
    if isinstance(config, Mapping) and config:
        shown = json.dumps(dict(config), indent=1, sort_keys=True, default=str)
        parts.append(f"<h2>Config</h2><pre>{esc(shown)}</pre>")
    versions = r.get("versions") or {}
    if versions:
        text = ", ".join(f"{k} {v}" for k, v in versions.items())
        parts.append(f"<p class=muted>{esc(text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(
    report: Mapping[str, Any], out_dir: str | os.PathLike[str], *, title: str | None = None
) -> RenderedReport:
    """Write the PNGs and ``report.html`` (images inline) into `out_dir`."""
    out = Path(out_dir)
    images = render_plots(report, out)
    page = out / REPORT_HTML
    page.write_text(report_html(report, images, title=title), encoding="utf-8")
    return RenderedReport(page, images)


# -- inputs ----------------------------------------------------------------------------------
def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A report from a JSON file (a job's report.json, or `metacluster compress --json`
    output) or rebuilt from an artifact (`report_from_artifact`)."""
    from metacluster.artifact import is_artifact

    p = Path(path)
    if not p.is_file():
        raise InputError(f"not found: {p}")
    if is_artifact(p):
        return report_from_artifact(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p} is neither an artifact nor a report JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{p} does not hold a report (a JSON object)")
    if isinstance(data.get("metrics"), dict) and "metric" not in data:
        data = data["metrics"]  # a job as the API returns it
    return dict(data)


def report_from_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What an artifact alone shows: its headline metrics, its bytes by kind and layer,
    the codebooks' edge functions and the stored edge vectors in 2D by cluster (no
    "before": the original is not in the artifact; no sweep or baselines)."""
    import torch
    from safetensors import safe_open

    from metacluster.artifact import build_artifact, load_artifact, read_manifest
    from metacluster.compress.methods.diagnostics import codebook_functions, projection

    manifest, _ = read_manifest(path)
    compressed = load_artifact(path)
    size = Path(path).stat().st_size
    cfg = dict(manifest.get("cfg") or {})
    built = build_artifact(
        compressed,
        codebook_dtype=cfg.get("codebook_dtype"),
        other_dtype=cfg.get("other_dtype"),
        entropy=cfg.get("entropy"),
    )
    views = {
        name: layer.edge_view(name).coefficients.float().cpu()
        for name, layer in compressed.kan_layers()
    }
    proj = projection(views, views, compressed, int(cfg.get("seed", 0)))
    for p in proj.values():
        p["before"] = []  # the original vectors are not in the artifact
    kinds = dict(built.breakdown.by_kind)
    with safe_open(str(path), framework="pt") as f:
        header = (f.metadata() or {}).get("mcz", "")
    if header.startswith("2:") and header[2:].isdigit():  # the file's own manifest size
        kinds["manifest"] = int(header[2:])
        kinds["container"] = size - kinds["manifest"] - sum(kinds.get(k, 0) for k in PAYLOAD_KINDS)
    metrics = dict(manifest.get("metrics") or {})
    layers = []
    for name, layer in compressed.kan_layers():
        parts = built.breakdown.by_layer.get(name, {})
        layers.append(
            {
                "name": name,
                "edges": layer.n_edges,
                "coef_dim": layer.coef_dim,
                "bytes": sum(parts.values()),
                "bytes_breakdown": parts,
            }
        )
    with torch.no_grad():
        functions = codebook_functions(compressed)
    return {
        **metrics,
        "method": manifest.get("method"),
        "bytes_after": size,
        "bytes_breakdown": kinds,
        "layers": layers,
        "codebook_functions": functions,
        "projection": proj,
        "config": cfg,
    }


__all__ = [
    "PLOTS",
    "RenderedReport",
    "load_report",
    "render_plots",
    "render_report",
    "report_from_artifact",
    "report_html",
]
