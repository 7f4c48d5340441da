"""Server-Sent Events: the parser of a job's event stream, and the filter that keeps the
events one connection brings after the last one already seen."""

from __future__ import annotations

import json

import httpx

from metacluster.client.errors import StreamUnavailable
from metacluster.client.records import Event


class SSEParser:
    """Server-Sent Events from lines: `feed(line)` returns an `Event` when one is complete."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            if self._id is not None:
                self.last_id = self._id
            return Event.from_dict(json.loads(data))
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class NewEvents:
    """The events of one event-stream answer that come after `after`, fed its lines;
    `StreamUnavailable` when the answer is no event stream."""

    def __init__(self, response: httpx.Response, after: int) -> None:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise StreamUnavailable("the server did not answer with an event stream")
        self.parser = SSEParser()
        self.after = after

    def feed(self, line: str) -> Event | None:
        event = self.parser.feed(line)
        return event if event is not None and event.seq > self.after else None
