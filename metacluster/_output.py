"""What the command line reads and prints: shared by `metacluster ...` and `metacluster remote ...`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from metacluster.errors import ConfigError


def key_values(values: tuple[str, ...], flag: str) -> dict[str, Any]:
    """Repeated ``FLAG KEY=VALUE`` options; values parse as JSON (bits=2), else strings."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=flag)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


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
