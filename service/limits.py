"""Request bounds that hold before a route runs: JSON body size and integer parsing.

`BodyLimitMiddleware` refuses a body past ``max_json_bytes`` with 413 problem+json,
from its Content-Length before anything is read, or, for a chunked body, as soon as
the bytes received pass the limit: a route never buffers more. The streamed multipart
uploads (`STREAMED`) count their own bytes as they spool (`service.multipart`).

`check_config_size` bounds the job config a job stores (and returns on every read).

`parse_int` is the one parser of integers from headers and query strings: ASCII digits
only (no sign, space, exponent or other Unicode digit such as ``²``), at most 19 of
them, and within ``[minimum, 2**63 - 1]``; anything else is a 422.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.service_errors import PayloadTooLargeError, RequestValidationProblem
from service.problems import problem

MAX_INT64 = 2**63 - 1
_MAX_DIGITS = len(str(MAX_INT64))
_ASCII_DIGITS = frozenset(b"0123456789")


def parse_int(text: str, *, name: str, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    """``text`` as an integer in ``[minimum, maximum]``; ValueError (naming ``name``)
    for anything but 1-19 ASCII digits in that range."""
    raw = text.encode("utf-8", "surrogatepass")
    if not raw or len(raw) > _MAX_DIGITS or not set(raw) <= _ASCII_DIGITS:
        raise ValueError(f"{name} must be a whole number of 1-{_MAX_DIGITS} ASCII digits")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}")
    return value


def parse_int_or_422(text: str, *, name: str, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    """`parse_int` for values read by hand (headers): a 422 problem instead of ValueError."""
    try:
        return parse_int(text, name=name, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        raise RequestValidationProblem(str(exc)) from None


def _strict_int(value: Any) -> Any:
    # Query strings arrive as str; defaults (already int) pass through.
    return parse_int(value, name="value") if isinstance(value, str) else value


StrictInt = Annotated[int, BeforeValidator(_strict_int)]
"""An ``int`` query parameter parsed by `parse_int` (combine with ``Query(ge=, le=)``)."""


def check_config_size(config: dict[str, Any], max_bytes: int) -> None:
    """413 for a job config longer than ``max_bytes`` as compact JSON: a job stores its
    config and returns it in every read of the job."""
    size = len(json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"the job config is {size} bytes of JSON; at most {max_bytes} are stored "
            "(METACLUSTER_MAX_CONFIG_BYTES)"
        )


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a request body larger than ``max_bytes`` on every route but the
    ``streamed`` (method, path) pairs, which bound their own bodies while spooling."""

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: frozenset[tuple[str, str]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.streamed:
            await self.app(scope, receive, send)
            return
        detail = f"request body exceeds the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and content_length_over(declared.decode("latin-1"), self.max_bytes):
            await _send_413(scope, receive, send, detail)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if received > self.max_bytes:
                return  # the app's answer to the cut-off body; ours goes out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception:
            if received <= self.max_bytes or started:
                raise
        if received > self.max_bytes and not started:
            await _send_413(scope, receive, send, detail)


def content_length_over(declared: str, limit: int) -> bool:
    """A Content-Length over the limit; one that is no bounded integer counts as over."""
    try:
        return parse_int(declared, name="Content-Length") > limit
    except ValueError:
        return True


async def _send_413(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    response = problem(Request(scope), 413, "payload_too_large", detail)
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
