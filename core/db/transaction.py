"""Per-request transaction: commit when the route succeeds, then run after-commit hooks.

Enqueueing is an after-commit hook, so a worker never sees a job row that is not there yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

Hook = Callable[[], None]
_AFTER_COMMIT = "metacluster.after_commit"
_AFTER_ROLLBACK = "metacluster.after_rollback"


def after_commit(session: Session, hook: Hook) -> None:
    """Run ``hook`` once the session's transaction has committed (dropped on rollback)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(hook)


def after_rollback(session: Session, hook: Hook) -> None:
    """Run ``hook`` if the transaction rolls back (e.g. delete files stored for it)."""
    session.info.setdefault(_AFTER_ROLLBACK, []).append(hook)


def commit(session: Session) -> None:
    """Commit, then run the after-commit hooks in order; their errors propagate."""
    session.commit()
    session.info.pop(_AFTER_ROLLBACK, None)
    hooks: list[Hook] = session.info.pop(_AFTER_COMMIT, [])
    for hook in hooks:
        hook()


def rollback(session: Session) -> None:
    """Roll back and run the after-rollback hooks (their errors are logged, not raised)."""
    session.rollback()
    session.info.pop(_AFTER_COMMIT, None)
    hooks: list[Hook] = session.info.pop(_AFTER_ROLLBACK, [])
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-rollback hook failed")
