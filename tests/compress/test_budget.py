"""A byte budget instead of a K, residual codebooks, DKM, the validation split and
augmented distillation."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch

from compress.helpers import fast_config
from metacluster.artifact import load_artifact, read_manifest, write_artifact
from metacluster.compress import ArtifactSizer, compress, plan
from metacluster.compress.stages.allocation import (
    LayerChoice,
    Option,
    k_steps,
    solve,
    spend_leftover,
)
from metacluster.compress.stages.functional import MIN_VAL_SAMPLES, make_training_set
from metacluster.data import Dataset, load_dataset
from metacluster.errors import ConfigError
from metacluster.kan import describe_model
from metacluster.kan.model import KANModel

CPU = torch.device("cpu")


def _brute_force(options: dict[str, list[Option]], budget: int) -> float | None:
    best = None
    for combo in itertools.product(*options.values()):
        if sum(o.bytes for o in combo) <= budget:
            delta = sum(o.delta for o in combo)
            best = delta if best is None else min(best, delta)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_finds_the_least_loss_within_the_budget(seed: int) -> None:
    rng = random.Random(seed)
    options = {
        f"l{i}": [
            Option(LayerChoice("codebook", 2**j), rng.randint(50, 3000), rng.uniform(0, 5))
            for j in range(rng.randint(1, 5))
        ]
        for i in range(rng.randint(1, 4))
    }
    budget = rng.randint(100, 8000)
    expected = _brute_force(options, budget)
    chosen = solve(options, budget)
    if expected is None:
        assert chosen is None
        return
    assert chosen is not None and set(chosen) == set(options)
    assert sum(o.bytes for o in chosen.values()) <= budget
    # the byte axis is discretised into BINS steps: optimal up to that rounding
    assert sum(o.delta for o in chosen.values()) <= expected + 1e-9 or budget > 4000


def test_leftover_bytes_grow_the_codebooks_that_gain_most() -> None:
    """The knapsack's ties leave bytes unused; the leftover pass spends them on the
    next larger codebook with the best gain per byte, then stops when none fits."""

    def opts(deltas: list[float]) -> list[Option]:
        return [Option(LayerChoice("dense"), 10_000, 0.0)] + [
            Option(LayerChoice("codebook", k), 100 * k, d)
            for k, d in zip(k_steps(16), deltas, strict=False)
        ]

    options = {"a": opts([5, 4, 4, 4, 4, 4, 4]), "b": opts([9, 3, 3, 1, 1, 1, 1])}
    chosen = {"a": options["a"][1], "b": options["b"][1]}  # K=2 each: 400 bytes
    out = spend_leftover(options, chosen, 1300)
    # b gains 6 for 100 bytes (K=3), then a 1 (K=3); then the ties go to the more
    # sensitive layer (a: 4 > 3) up to K=8, and b takes the last 100 bytes (K=4)
    assert {n: o.choice.k for n, o in out.items()} == {"a": 8, "b": 4}
    assert sum(o.bytes for o in out.values()) == 1200
    assert spend_leftover(options, chosen, 400) == chosen
    assert k_steps(16) == [2, 3, 4, 6, 8, 12, 16] and k_steps(2) == [2]


def test_an_allocation_that_overshoots_is_run_again_lower(
    small_model: KANModel, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the file comes out over the budget (the allocation's estimate was short),
    the engine allocates again for a smaller aim until the real bytes fit."""
    import metacluster.compress.methods.metacluster as pipeline
    from metacluster.compress.stages.allocation import allocate

    aims: list[int] = []

    def optimistic(ctx, meta, budget):  # type: ignore[no-untyped-def]
        aims.append(budget)
        # the first estimate is off by 2x: it allocates for twice the bytes
        return allocate(ctx, meta, budget * 2 if len(aims) == 1 else budget)

    monkeypatch.setattr(pipeline, "allocate", optimistic)
    _, report = compress(small_model, fast_config(max_bytes=2600), digits, sizer=ArtifactSizer())
    assert len(aims) >= 2 and aims[1] < aims[0] == 2600
    assert report.bytes_after <= 2600 and report.budget_bytes == 2600
    assert report.budget_attempts == len(aims) and report.stages["allocate"] > 0


def test_a_budget_never_met_is_an_error_not_a_larger_file(
    small_model: KANModel, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metacluster.compress.methods.metacluster as pipeline
    from metacluster.compress.stages.allocation import allocate

    # every allocation ignores its aim and spends a megabyte: the file never fits
    monkeypatch.setattr(pipeline, "allocate", lambda c, m, b: allocate(c, m, 1 << 20))
    with pytest.raises(ConfigError, match="2600 bytes was not met after 3 allocations"):
        compress(small_model, fast_config(max_bytes=2600), digits, sizer=ArtifactSizer())


def test_a_budget_is_met_in_real_bytes_with_k_per_layer(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    cfg = fast_config(max_bytes=2600)
    compressed, report = compress(small_model, cfg, digits, sizer=ArtifactSizer())
    info = write_artifact(compressed, tmp_path / "b.mcz", report)
    assert info.bytes == report.bytes_after <= 2600 and report.budget_bytes == 2600
    modes = {layer["name"]: (layer["mode"], layer["k"]) for layer in report.layers}
    assert set(modes) == {"layers.0", "layers.1"}
    manifest, _ = read_manifest(tmp_path / "b.mcz")
    cb_ks = sorted(cb["k"] for cb in manifest["cb"])
    assert cb_ks == sorted(k for mode, ks in modes.values() if mode == "codebook" for k in ks)
    loaded = load_artifact(tmp_path / "b.mcz")
    with torch.no_grad():
        assert torch.equal(loaded(digits.x_test), compressed(digits.x_test))
    # a larger budget buys at least as much K somewhere, never less accuracy on validation
    _, big = compress(small_model, fast_config(max_bytes=6000), digits, sizer=ArtifactSizer())
    assert big.bytes_after <= 6000 and big.bytes_after >= report.bytes_after


def test_an_impossible_budget_is_a_clear_error(small_model: KANModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="byte budget of 300 bytes cannot be met"):
        compress(small_model, fast_config(max_bytes=300), digits)


def test_the_plan_of_a_budget_has_k_per_layer_and_expected_bytes(small_model: KANModel) -> None:
    info = {**describe_model(small_model), "bytes": 40_000}
    p = plan(info, None, fast_config(target_ratio=20))
    assert p.budget_bytes == 2000 and p.ok
    assert all(layer.mode in ("codebook", "uniform", "dense") for layer in p.layers)
    assert p.expected_bytes[0] <= 2000
    assert "allocate" in [s.name for s in p.stages]
    tight = plan(info, None, fast_config(target_ratio=400))
    assert not tight.ok and "cannot be met" in tight.checks[-1].detail


@pytest.mark.parametrize("k", [2, 16])
def test_the_plans_expected_bytes_track_the_real_file(
    small_model: KANModel, digits: Dataset, k: int
) -> None:
    """The dry run's estimate is within 15% of the written artifact, and a budget the
    smallest real artifact meets is never refused by the plan."""
    cfg = fast_config(k=k, soft_epochs=0, finetune_epochs=0)
    _, report = compress(small_model, cfg, digits, sizer=ArtifactSizer())
    info = {**describe_model(small_model), "bytes": report.bytes_before}
    expected = plan(info, None, cfg).expected_bytes[k]
    assert abs(expected - report.bytes_after) <= 0.15 * report.bytes_after
    if k == 2:
        assert plan(info, None, cfg.replace(max_bytes=report.bytes_after + 16)).ok


def test_residual_codebooks_round_trip_and_cut_the_error(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    plain_cfg = fast_config(k=4, soft_epochs=0, finetune_epochs=0)
    _, one = compress(small_model, plain_cfg, digits, sizer=ArtifactSizer())
    compressed, two = compress(
        small_model, plain_cfg.replace(residual_k=4), digits, sizer=ArtifactSizer()
    )
    assert two.bytes_breakdown["indices"] > one.bytes_breakdown["indices"]
    for a, b in zip(one.layers, two.layers, strict=True):
        assert b["coef_rel_error"] < a["coef_rel_error"]
    write_artifact(compressed, tmp_path / "r.mcz", two)
    manifest, _ = read_manifest(tmp_path / "r.mcz")
    assert [cb.get("r", 0) for cb in manifest["cb"]] == [0, 1, 0, 1]
    loaded = load_artifact(tmp_path / "r.mcz")
    with torch.no_grad():
        assert torch.equal(loaded(digits.x_test), compressed(digits.x_test))


def test_dkm_trains_soft_clusters_without_a_meta_learner(
    small_model: KANModel, digits: Dataset
) -> None:
    stages: list[str] = []
    _, report = compress(
        small_model,
        fast_config(method="dkm", k=4),
        digits,
        progress=lambda s, i, n, loss: stages.append(s),
    )
    assert "soft" in stages and "meta" not in stages and "regress" not in stages
    assert report.method == "dkm" and report.k == 4


def test_the_validation_split_is_carved_from_training_data(digits: Dataset) -> None:
    fit = make_training_set(digits, fast_config(val_fraction=0.2), CPU, None)
    assert fit.n + int(fit.val_x.shape[0]) == digits.n_train
    assert int(fit.val_x.shape[0]) == round(0.2 * digits.n_train)
    rows = {tuple(r.tolist()) for r in fit.x}
    assert not any(tuple(r.tolist()) in rows for r in fit.val_x[:50])
    same = make_training_set(digits, fast_config(val_fraction=0.0), CPU, None)
    assert same.n == digits.n_train and torch.equal(same.val_x, same.x)


def test_a_split_too_small_to_judge_on_is_not_carved() -> None:
    small = load_dataset(f"eq:xy?n_train={10 * MIN_VAL_SAMPLES - 10}&n_test=20")
    fit = make_training_set(small, fast_config(val_fraction=0.1), CPU, None)
    assert fit.n == small.n_train and torch.equal(fit.val_x, fit.x)
    enough = load_dataset(f"eq:xy?n_train={10 * MIN_VAL_SAMPLES}&n_test=20")
    fit = make_training_set(enough, fast_config(val_fraction=0.1), CPU, None)
    assert int(fit.val_x.shape[0]) == MIN_VAL_SAMPLES and fit.n == enough.n_train - MIN_VAL_SAMPLES


@pytest.mark.parametrize("kind", ["mixup", "noise"])
def test_augmented_inputs_are_labelled_by_the_teacher(
    small_model: KANModel, digits: Dataset, kind: str
) -> None:
    fit = make_training_set(digits, fast_config(augment=kind, augment_factor=0.5), CPU, small_model)
    assert fit.extra_x is not None and fit.extra_teacher is not None
    assert fit.extra_x.shape == (round(0.5 * fit.n), 64)
    with torch.no_grad():
        assert torch.allclose(fit.extra_teacher, small_model(fit.extra_x), atol=1e-5)
    assert not torch.equal(fit.extra_x[: fit.n // 2], fit.x[: fit.n // 2])


def test_patience_stops_a_stage_early_and_keeps_its_best_epoch(
    small_model: KANModel, digits: Dataset
) -> None:
    calls: list[tuple[str, int, int]] = []
    cfg = fast_config(k=4, meta_epochs=40, meta_lr=0.5, patience=2, soft_epochs=0)
    _, report = compress(
        small_model, cfg, digits, progress=lambda s, i, n, loss: calls.append((s, i, n))
    )
    planned = max(n for s, _, n in calls if s == "meta")
    meta_steps = [i for s, i, n in calls if s == "meta" and i < n]
    # patience counts validation checkpoints: stopped well before its planned steps
    assert meta_steps and max(meta_steps) < planned * 0.9
    meta = report.schedule["stages"]["meta"]
    assert meta["stopped"] == "early stopping" and meta["steps"] < meta["planned"]
    assert report.val_before is not None and report.val_after is not None


def test_the_report_has_baselines_codebook_curves_and_projections(
    small_model: KANModel, digits: Dataset
) -> None:
    from metacluster.compress.methods.diagnostics import CURVE_POINTS

    _, report = compress(
        small_model,
        fast_config(k=4, baselines=True, finetune_epochs=1),
        digits,
        sizer=ArtifactSizer(),
    )
    methods = [(b["method"], b["options"]) for b in report.baselines]
    assert methods == [
        ("scalar", {"bits": 1}),
        ("scalar", {"bits": 2}),
        ("pq", {"m": 3, "bits": 1}),
        ("int4", {}),
        ("int8", {}),
    ]
    assert all(b["bytes_after"] > 0 and 0 <= b["after"] <= 1 for b in report.baselines)
    int8 = report.baselines[-1]
    assert int8["bytes_after"] > report.bytes_after  # 8 bits a value against 2 bits an edge
    assert set(report.codebook_functions) == {"layers.0", "layers.1"}
    for curves in report.codebook_functions.values():
        assert len(curves["x"]) == CURVE_POINTS and len(curves["curves"]) == 4
    for name, proj in report.projection.items():
        n = len(proj["cluster"])
        assert n == min(400, dict(small_model.kan_layers())[name].n_edges)
        assert len(proj["before"]) == len(proj["after"]) == n and max(proj["cluster"]) < 4
    assert report.pareto and report.pareto[0]["bytes_after"] == report.bytes_after


def test_dkm_resumes_from_its_stage_checkpoints(small_model: KANModel, digits: Dataset) -> None:
    from metacluster.artifact import artifact_bytes
    from metacluster.compress import MemoryCheckpoint

    ckpt = MemoryCheckpoint()
    cfg = fast_config(method="dkm", k=[4, 8])
    first, r1 = compress(small_model, cfg, digits, checkpoint=ckpt)
    assert sorted(ckpt.stages) == [
        "finetune_k4", "finetune_k8", "kmeans_k4", "kmeans_k8", "soft_k4", "soft_k8"
    ]  # fmt: skip
    calls: list[tuple[str, int, int]] = []
    again, r2 = compress(
        small_model,
        cfg,
        digits,
        checkpoint=ckpt,
        progress=lambda s, i, n, loss: calls.append((s, i, n)),
    )
    assert calls == [(s, 1, 1) for s in ("soft", "kmeans", "finetune") * 2]  # all restored
    assert artifact_bytes(first, r1) == artifact_bytes(again, r2)
