"""What the command line reads and prints: shared by `metacluster ...` and `metacluster remote ...`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from metacluster.errors import ConfigError


def read_config_file(path: str) -> dict[str, Any]:
    """A `--config` file: a JSON object, or a one-line ConfigError."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config {path} must hold a JSON object")
    return config


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
