"""Effort presets, step budgets, the time budget, and progress a log can read."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress.helpers import fast_config
from metacluster.compress import MetaClusterConfig, compress
from metacluster.compress.pipeline.plan import LayerPlan, plan
from metacluster.compress.pipeline.progress import LogLines, StageClock
from metacluster.compress.spec.effort import PRESETS, planned_steps, step_cap, work_per_sample
from metacluster.data import load_dataset
from metacluster.data.dataset import Dataset, DatasetMeta
from metacluster.errors import ConfigError
from metacluster.kan.model import KANModel
from metacluster.kan.summary import describe_model


def _meta(n_train: int) -> DatasetMeta:
    return DatasetMeta("classification", n_train, 1000, (64,), 10, 10)


def test_stage_steps_stop_growing_with_the_data_set() -> None:
    cfg = MetaClusterConfig()
    layers = [LayerPlan("layers.0", 784 * 64, 8, 64, 16), LayerPlan("layers.1", 640, 8, 10, 16)]
    work = work_per_sample(layers)
    effort = PRESETS["default"]
    steps = [planned_steps(effort, cfg, "soft", work, n) for n in (6_000, 60_000, 600_000)]
    cap = step_cap(effort, "soft", cfg.batch_size, work)
    assert steps[1] == steps[2] == cap  # past a point, more data adds no steps
    assert steps[0] <= cap
    # fast < default < best, stage by stage
    for stage in ("soft", "finetune", "meta"):
        fast, default, best = (
            planned_steps(PRESETS[e], cfg, stage, work, 60_000) for e in ("fast", "default", "best")
        )
        assert fast < default < best
    # a small model's steps are cheap: its budget allows what its epochs ask for
    small = work_per_sample([LayerPlan("l", 5 * 128, 13, 128, 16)])
    assert planned_steps(effort, cfg, "soft", small, 1_000) == cfg.soft_min_steps


def test_effort_and_time_budget_round_trip_and_old_configs_keep_baselines() -> None:
    cfg = MetaClusterConfig(effort="fast", time_budget_s=30.0)
    assert MetaClusterConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert MetaClusterConfig().baselines is False  # baselines only when asked
    old = MetaClusterConfig.from_dict({"k": 8, "version": 2})
    assert old.baselines is True and old.effort == "default"  # as version 2 ran them
    with pytest.raises(ConfigError, match="effort must be one of"):
        MetaClusterConfig(effort="maximum")
    with pytest.raises(ConfigError, match="time_budget_s must be a number"):
        MetaClusterConfig(time_budget_s=0.0)


def test_a_time_budget_too_small_for_fast_is_a_config_error_at_plan_time(
    small_model: KANModel, digits: Dataset
) -> None:
    info = describe_model(small_model)
    tiny = plan(info, digits.meta(), MetaClusterConfig(time_budget_s=1.0))
    assert not tiny.ok
    with pytest.raises(ConfigError, match=r"time_budget_s=1\.0 is too small"):
        tiny.raise_for_problems()
    assert plan(info, digits.meta(), MetaClusterConfig(time_budget_s=600.0)).ok
    with pytest.raises(ConfigError, match="too small"):
        compress(small_model, fast_config(time_budget_s=1.0), digits)


def test_steps_are_capped_and_the_report_says_so(
    small_model: KANModel, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metacluster.compress.spec import effort

    # a fast preset whose fine-tuning budget is 40 steps of this model (W = 1,184 edges x 9)
    fast = effort.PRESETS["fast"]
    units = {**fast.units, "finetune": 40 * 256 * 10_656}
    monkeypatch.setitem(effort.PRESETS, "fast", dataclasses.replace(fast, units=units))
    cfg = fast_config(effort="fast", finetune_epochs=400, soft_epochs=1)
    _, report = compress(small_model, cfg, digits)
    assert "soft" not in report.schedule["stages"]  # fast has no clustering-aware stage
    ft = report.schedule["stages"]["finetune"]
    assert ft["epoch_steps"] == 400 * 6 and ft["capped"] == "step budget"
    assert ft["steps"] == ft["planned"] == 40
    assert report.schedule["effort"] == "fast"
    assert report.schedule["baselines"].startswith("not run")


def test_a_time_budget_reached_mid_stage_keeps_the_best_state_and_says_so(
    small_model: KANModel, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metacluster.compress.spec import effort

    # A deadline already passed when fine-tuning starts: the stage re-plans to the steps
    # it has timed and keeps its best checkpoint (never worse than where it started).
    monkeypatch.setattr(effort.Clock, "deadline", lambda self, share: 0.0)
    cfg = fast_config(finetune_epochs=50, soft_epochs=0, time_budget_s=600.0)
    _, report = compress(small_model, cfg, digits)
    ft = report.schedule["stages"]["finetune"]
    assert ft["stopped"] == "time budget" and "kept the best state" in ft["note"]
    assert ft["steps"] < ft["epoch_steps"]
    assert report.schedule["within_time_budget"] is True


def test_the_stage_clock_throttles_progress_and_marks_starts_and_ends() -> None:
    now = [0.0]
    clock = StageClock(10.0, now=lambda: now[0])
    events = []
    for step in range(1, 101):  # one step a second
        now[0] = float(step)
        events += clock.update("soft", step, 100, 0.5)
    events += clock.update("finetune", 1, 10, None)
    events += clock.close()
    kinds = [(e.kind, e.stage) for e in events]
    assert kinds[0] == ("start", "soft") and ("end", "soft") in kinds
    progress = [e for e in events if e.kind == "progress"]
    assert 8 <= len(progress) <= 10  # at most one every 10 s over 100 s
    assert progress[0].eta == pytest.approx(progress[0].elapsed * 89 / 11, rel=0.2)
    assert kinds[-2:] == [("start", "finetune"), ("end", "finetune")]
    assert "ETA" in progress[0].line() and "step 11/100" in progress[0].line()


def test_log_lines_write_plain_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    with path.open("w") as stream:
        log = LogLines(stream, interval=0.0)
        log("kmeans", 1, 2, None)
        log("kmeans", 2, 2, None)
        log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "stage kmeans: start" and lines[-1].startswith("stage kmeans: done in")


def _cli(*args: str, stderr: Path) -> subprocess.CompletedProcess[str]:
    with stderr.open("w") as err:  # stderr is a file, not a terminal
        return subprocess.run(
            [sys.executable, "-c", "from metacluster.cli import main; main()", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
            check=False,
        )


def test_a_piped_compress_prints_stage_lines(tmp_path: Path, small_model: KANModel) -> None:
    from metacluster.formats import save_model

    model = tmp_path / "model.safetensors"
    save_model(small_model, model)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"soft_min_steps": 0, "soft_epochs": 1, "finetune_epochs": 1}))
    log = tmp_path / "stderr.txt"
    proc = _cli(
        "compress", str(model), "--data", "digits", "--k", "4", "--out", str(tmp_path / "a.mcz"),
        "--config", str(config), "--effort", "default", "--json", stderr=log,
    )  # fmt: skip
    assert proc.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    for stage in ("soft", "kmeans", "finetune"):
        assert f"stage {stage}: start" in lines
        assert any(line.startswith(f"stage {stage}: done in") for line in lines)
    result = json.loads(proc.stdout)
    assert result["schedule"]["effort"] == "default"
    # a time budget too small for this model is an `error:` line before any training
    log2 = tmp_path / "stderr2.txt"
    proc = _cli(
        "compress", str(model), "--data", "digits", "--out", str(tmp_path / "b.mcz"),
        "--time-budget", "1", stderr=log2,
    )  # fmt: skip
    text = log2.read_text()
    assert proc.returncode != 0 and text.startswith("error:") and "too small" in text
    assert "stage" not in text


def test_fit_and_validation_subsets_are_capped(small_model: KANModel) -> None:
    from metacluster.compress.stages.functional import make_training_set

    data = load_dataset("digits")
    fit = make_training_set(
        data, MetaClusterConfig(), torch.device("cpu"), small_model, max_fit=300, max_val=80,
        max_probe=40,
    )  # fmt: skip
    assert fit.n == 300 and fit.val_x.shape[0] == 80 and fit.probe_x is not None
    assert fit.probe_x.shape[0] == 40
    full = make_training_set(data, MetaClusterConfig(), torch.device("cpu"), small_model)
    assert full.n + full.val_x.shape[0] == data.n_train


def _conv_net(side: int, channels: int = 2) -> KANModel:
    """Flat inputs -> conv KAN (padding 1) -> 2x2 max pool -> conv KAN -> linear head."""
    from metacluster.kan.conv import KANConv2d
    from metacluster.kan.glue import Flatten, Linear, MaxPool2d, Reshape

    torch.manual_seed(0)
    return KANModel(
        [
            Reshape((1, side, side)),
            KANConv2d(1, channels, 3, padding=1, norm="none"),
            MaxPool2d(2),
            KANConv2d(channels, channels, 3, padding=1, norm="none"),
            Flatten(),
            Linear(channels * (side // 2) ** 2, 10),
        ]
    ).eval()


def test_a_conv_layer_costs_its_edges_at_every_output_position() -> None:
    cfg = MetaClusterConfig()
    works = {}
    for side in (8, 16):
        model = _conv_net(side)
        meta = DatasetMeta("classification", 60_000, 1000, (side * side,), 10, 10)
        layers = plan(describe_model(model, meta.input_shape), meta, cfg).layers
        # the first conv sees side x side positions, the second the pooled (side/2)^2
        assert [la.positions for la in layers] == [side * side, (side // 2) ** 2]
        works[side] = work_per_sample(layers)
        per_edge = sum(la.edges * la.coef_dim for la in layers)
        assert works[side] > side * per_edge / 4  # not one evaluation per edge
        # without the data's shape the plan cannot know the positions: one per edge
        assert work_per_sample(plan(describe_model(model), meta, cfg).layers) == per_edge
    assert works[16] == 4 * works[8]  # 4x the positions, 4x the work
    # a costlier step: the stages' step caps drop by the same factor
    effort = PRESETS["default"]
    caps = {s: step_cap(effort, "soft", cfg.batch_size, w) for s, w in works.items()}
    assert caps[16] < caps[8] and caps[8] == pytest.approx(4 * caps[16], abs=4)
    # dense layers: one evaluation per edge, as before (no probe, no positions)
    from metacluster.kan.build import build_kan

    mlp = build_kan("bspline", [64, 4, 10])
    meta = DatasetMeta("classification", 60_000, 1000, (64,), 10, 10)
    rows = describe_model(mlp, meta.input_shape)["layers"]
    assert rows == describe_model(mlp)["layers"] and all("positions" not in r for r in rows)
    dense = plan(describe_model(mlp, meta.input_shape), meta, cfg).layers
    assert work_per_sample(dense) == 64 * 4 * dense[0].coef_dim + 4 * 10 * dense[1].coef_dim


def test_a_conv_models_step_caps_count_its_positions(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metacluster.compress.spec import effort

    model = _conv_net(8)
    layers = plan(
        describe_model(model, digits.meta().input_shape), digits.meta(), fast_config()
    ).layers
    work = work_per_sample(layers)
    per_edge = sum(la.edges * la.coef_dim for la in layers)
    assert work == sum(la.edges * la.coef_dim * la.positions for la in layers) > 10 * per_edge
    # a fine-tuning budget of 40 steps of this model's real cost: counted once per edge
    # it would allow 30x more, more than the epochs ask for
    fast = effort.PRESETS["fast"]
    units = {**fast.units, "finetune": 40 * 256 * work}
    monkeypatch.setitem(effort.PRESETS, "fast", dataclasses.replace(fast, units=units))
    cfg = fast_config(effort="fast", finetune_epochs=10, soft_epochs=1)
    _, report = compress(model, cfg, digits)
    ft = report.schedule["stages"]["finetune"]
    assert ft["epoch_steps"] == 60 and ft["capped"] == "step budget"
    assert ft["steps"] == ft["planned"] == 40
