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
        ("k", 1, r"k must be an integer in 2\.\.65536, got 1"),
        ("k", 65537, r"k must be an integer in 2\.\.65536"),
        ("k", [], "non-empty"),
        ("k", [4, 4], "duplicates"),
        ("k", 2.5, "k must be an integer"),
        ("d_emb", 0, "d_emb must be an integer in 1..4"),
        ("d_emb", 5, "d_emb must be an integer in 1..4"),
        ("scope", "everywhere", "scope must be one of"),
        ("codebook_dtype", "int8", "codebook_dtype must be one of"),
        ("mode", "magic", "mode must be one of"),
        ("device", "tpu", "device must be"),
        ("meta_lr", 0.0, r"meta_lr must be a number in \[1e-08, 10.0\], got 0.0"),
        ("meta_lr", float("inf"), "meta_lr must be a number in"),
        ("meta_lr", float("nan"), "meta_lr must be a number in"),
        ("batch_size", 0, "batch_size must be an integer in 1"),
        ("max_drop", -0.1, "max_drop must be a number in"),
        # one job must not hold a worker for days, nor fail later with an internal error
        ("meta_epochs", 10**9, r"meta_epochs must be an integer in 0\.\.10000"),
        ("regress_steps", 2**70, "regress_steps must be an integer in 0..100000"),
        ("kmeans_restarts", 10**9, "kmeans_restarts must be an integer in 1..100"),
        ("hidden", 10**7, "hidden must be an integer in 1..4096"),
        ("seed", 2**70, "seed must be an integer in 0..4294967295"),
        ("val_fraction", 0.9, "val_fraction must be a number in"),
        ("target_ratio", 0.5, "target_ratio must be a number in"),
        ("residual_k", 1, "residual_k must be 0"),
        ("augment", "rotate", "augment must be one of"),
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


def test_every_knob_is_documented_with_its_bounds() -> None:
    knobs = {row["name"]: row for row in MetaClusterConfig.describe()}
    assert set(knobs) == set(MetaClusterConfig().to_dict())
    for row in knobs.values():
        assert len(row["doc"]) > 10, row["name"]
    assert (knobs["meta_epochs"]["lo"], knobs["meta_epochs"]["hi"]) == (0, 10_000)
    assert knobs["mode"]["choices"] == ("post_hoc", "from_scratch")


def test_a_budget_needs_per_layer_scope_and_one_of_ratio_or_bytes() -> None:
    assert MetaClusterConfig(target_ratio=40).budgeted
    with pytest.raises(ConfigError, match="not both"):
        MetaClusterConfig(target_ratio=40, max_bytes=1000)
    with pytest.raises(ConfigError, match="per_layer"):
        MetaClusterConfig(max_bytes=1000, scope="global")


def test_a_version_1_config_keeps_its_grid_policy() -> None:
    old = {"k": 8, "version": 1}
    assert MetaClusterConfig.from_dict(old).grid_policy == "separate"
    assert MetaClusterConfig.from_dict({"k": 8}).grid_policy == "shared"


def test_small_data_sets_get_enough_soft_steps() -> None:
    assert MetaClusterConfig().soft_min_steps == 1500
    cfg = MetaClusterConfig(soft_epochs=100, soft_min_steps=1500, batch_size=256)
    assert cfg.soft_epochs_for(3600) == 100  # 15 batches an epoch: 1500 steps already
    assert cfg.soft_epochs_for(900) == 375  # 4 batches an epoch
    assert cfg.soft_epochs_for(10) == 1500  # one batch an epoch
    assert cfg.replace(soft_epochs=0).soft_epochs_for(10) == 0  # 0 still skips the stage
    assert cfg.replace(soft_min_steps=0).soft_epochs_for(10) == 100
    assert cfg.replace(soft_min_steps=10**6).soft_epochs_for(10) == 10_000  # capped
