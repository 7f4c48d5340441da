"""``GET /``: the dashboard, a small page served as files (no build step, no framework).

Sign in with an API key (kept in the tab's session storage), see the key's jobs with
live status and progress (each job's event stream), metrics, the report and the
artifact, and start a job from an upload. The page talks to the same `/v1` API as
every other client; its Content-Security-Policy allows scripts from this origin only.
"""

from __future__ import annotations

import dataclasses
import html
import json
from functools import cache
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

import metacluster

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def method_options() -> str:
    """The job form's method choices, from the registry (the default selected): each
    `<option>` carries its summary, whether K (or a byte budget) applies, and its
    options with their defaults, which the page turns into fields."""
    from metacluster.compress.pipeline.registry import get_method, method_names
    from metacluster.compress.spec.options import DEFAULT_METHOD as default

    out = []
    for name in method_names():
        method = get_method(name)
        options = {f.name: f.default for f in dataclasses.fields(method.options)}
        attrs = {
            "value": name,
            "title": method.summary,
            "data-uses-k": "true" if method.uses_k else "false",
            "data-options": json.dumps(options),
        }
        text = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
        selected = " selected" if name == default else ""
        out.append(f"<option {text}{selected}>{html.escape(name)}</option>")
    return "\n".join(out)


@cache
def _page() -> str:
    text = (STATIC / "dashboard.html").read_text(encoding="utf-8")
    return Template(text).safe_substitute(version=metacluster.__version__, methods=method_options())


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(_page(), headers=HEADERS)


@router.get("/dashboard/app.js")
def script() -> Response:
    body = (STATIC / "dashboard.js").read_bytes()
    return Response(body, media_type="text/javascript; charset=utf-8", headers=HEADERS)


@router.get("/dashboard/app.css")
def stylesheet() -> Response:
    body = (STATIC / "dashboard.css").read_bytes()
    return Response(body, media_type="text/css; charset=utf-8", headers=HEADERS)
