"""HEAD wherever GET is: FastAPI routes answer only the methods they declare (unlike
Starlette's own ``Route``, which adds HEAD to GET), so a HEAD would be a 405.

`HeadMiddleware` runs a HEAD request as the GET it stands for and sends the GET's
status and headers (``Content-Length`` included) with an empty body, so every GET route,
present and future, answers HEAD the same way without a second route or OpenAPI entry.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadMiddleware:
    """HEAD -> GET, with every body chunk sent empty."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
