"""What the command line prints: shared by `metacluster ...` and `metacluster remote ...`."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> Any:
    """NaN / inf -> None, in dicts, lists and tuples too (a tuple becomes a list):
    strict JSON parsers (jq, JavaScript) reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
