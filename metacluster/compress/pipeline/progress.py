"""Progress a log can read: stage start and end lines, and a throttled progress line with
the step, the elapsed time and an estimate of the time left.

`StageClock` turns progress(stage, step, total, loss) calls into events (stage start,
progress, stage end) with their timings; `LogLines` writes them as plain lines (the CLI
on a stderr that is not a terminal); the worker phrases its job events with the same
clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

# At most one progress line per stage this often (stage starts and ends always print).
LOG_INTERVAL_S = 10.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Event:
    kind: str  # "start" | "progress" | "end"
    stage: str
    step: int
    total: int
    elapsed: float  # seconds since the stage started
    eta: float | None  # seconds left in the stage (None: not yet known)
    loss: float | None = None

    def line(self) -> str:
        if self.kind == "start":
            return f"stage {self.stage}: start"
        if self.kind == "end":
            return f"stage {self.stage}: done in {_duration(self.elapsed)}"
        eta = "?" if self.eta is None else _duration(self.eta)
        loss = "" if self.loss is None else f", loss {self.loss:.4g}"
        return (
            f"stage {self.stage}: step {self.step}/{self.total}, "
            f"elapsed {_duration(self.elapsed)}, ETA {eta}{loss}"
        )


class StageClock:
    """Events from progress calls: a start when the stage changes (ending the one before),
    an end when step reaches total, progress lines at most every `interval` seconds."""

    def __init__(self, interval: float = LOG_INTERVAL_S, now: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.now = now
        self.stage: str | None = None
        self.started = 0.0
        self.last_line = 0.0
        self.last: tuple[int, int] = (0, 0)
        self.ended = False

    def update(self, stage: str, step: int, total: int, loss: float | None) -> list[Event]:
        now = self.now()
        out: list[Event] = []
        if stage != self.stage:
            out += self.close()
            self.stage, self.started, self.last_line, self.ended = stage, now, now, False
            out.append(Event("start", stage, step, total, 0.0, None))
        self.last = (step, total)
        elapsed = now - self.started
        if total > 0 and step >= total:
            if not self.ended:
                self.ended = True
                out.append(Event("end", stage, step, total, elapsed, 0.0, loss))
        elif now - self.last_line >= self.interval:
            self.last_line = now
            eta = elapsed * (total - step) / step if step > 0 else None
            out.append(Event("progress", stage, step, total, elapsed, eta, loss))
        return out

    def close(self) -> list[Event]:
        """The end of the current stage, if it has not ended yet."""
        if self.stage is None or self.ended:
            return []
        self.ended = True
        step, total = self.last
        return [Event("end", self.stage, step, total, self.now() - self.started, 0.0)]


class LogLines:
    """progress(stage, step, total, loss) -> plain lines on a stream (a log file, a pipe)."""

    def __init__(self, stream: TextIO, interval: float = LOG_INTERVAL_S) -> None:
        self.stream = stream
        self.clock = StageClock(interval)

    def __call__(self, stage: str, step: int, total: int, loss: float | None) -> None:
        self._write(self.clock.update(stage, step, total, loss))

    def close(self) -> None:
        self._write(self.clock.close())

    def _write(self, events: list[Event]) -> None:
        for event in events:
            self.stream.write(event.line() + "\n")
        if events:
            self.stream.flush()


__all__ = ["LOG_INTERVAL_S", "Event", "LogLines", "StageClock"]
