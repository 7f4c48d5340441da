"""MetaClusterConfig: validation with clear ConfigErrors and an exact dict round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metacluster.compress import CONFIG_VERSION, MetaClusterConfig
from metacluster.errors import ConfigError


def test_round_trip_through_json_is_exact() -> None:
    cfg = MetaClusterConfig(
        k=[4, 8, 16],
        d_emb=3,
        hidden=17,
        scope="global",
        codebook_dtype="float16",
        include=["layers.*"],
        exclude=["layers.2"],
        seed=7,
        max_drop=0.02,
        mode="from_scratch",
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    back = MetaClusterConfig.from_dict(data)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert data["version"] == CONFIG_VERSION
    assert back.ks == [4, 8, 16]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("k", 1, "k must be an integer >= 2"),
        ("k", [], "non-empty"),
        ("k", [4, 4], "duplicates"),
        ("k", 2.5, "k must be an integer"),
        ("d_emb", 0, "d_emb must be an integer in 1..4"),
        ("d_emb", 5, "d_emb must be an integer in 1..4"),
        ("scope", "everywhere", "scope must be one of"),
        ("codebook_dtype", "int8", "codebook_dtype must be one of"),
        ("mode", "magic", "mode must be one of"),
        ("device", "tpu", "device must be"),
        ("meta_lr", 0.0, "meta_lr must be a number > 0"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("max_drop", -0.1, "max_drop must be a number >= 0"),
        ("version", 99, "config version 99"),
    ],
)
def test_bad_values_raise_config_error(field: str, value: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        MetaClusterConfig(**{field: value})


def test_from_dict_rejects_unknown_keys_and_non_objects() -> None:
    with pytest.raises(ConfigError, match="unknown config keys: colour"):
        MetaClusterConfig.from_dict({"k": 8, "colour": "red"})
    with pytest.raises(ConfigError, match="JSON object"):
        MetaClusterConfig.from_dict([("k", 8)])  # type: ignore[arg-type]


def test_error_messages_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        MetaClusterConfig(k=0)
    assert "\n" not in str(info.value)
    assert info.value.code == "invalid_config"
