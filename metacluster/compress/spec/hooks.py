"""How a running compression talks to its caller: progress reports and cancellation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metacluster.errors import CancelledError

Progress = Callable[[str, int, int, float | None], None]
"""progress(stage, step, total, loss)."""
ShouldStop = Callable[[], bool]
"""should_stop() -> True to cancel; polled between steps."""


@dataclass
class StageHooks:
    progress: Progress | None = None
    should_stop: ShouldStop | None = None

    def report(self, stage: str, step: int, total: int, loss: float | None) -> None:
        if self.progress is not None:
            self.progress(stage, step, total, loss)

    def check(self, stage: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise CancelledError(f"compression cancelled during stage {stage}")


__all__ = ["Progress", "ShouldStop", "StageHooks"]
