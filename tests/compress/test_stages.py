"""Each stage on its own: meta-learner regression, joint training, K-means, fine-tuning."""

from __future__ import annotations

import pytest
import torch

from compress.helpers import fast_config
from metacluster.compress.numeric.codebook import build_groups
from metacluster.compress.spec.hooks import StageHooks
from metacluster.compress.stages.functional import evaluate_model, make_training_set
from metacluster.compress.stages.meta import init_meta_learners, regress_meta_learners
from metacluster.compress.stages.runners import (
    run_finetune_stage,
    run_kmeans_stage,
    run_meta_stage,
    run_soft_stage,
)
from metacluster.data import Dataset
from metacluster.errors import CancelledError
from metacluster.kan.model import KANModel

CPU = torch.device("cpu")


def _layers(model: KANModel) -> list[str]:
    """Every KAN layer of the model, in forward order."""
    return [name for name, _ in model.kan_layers()]


def _coefs(model: KANModel) -> dict[str, torch.Tensor]:
    return {n: layer.edge_view(n).coefficients.clone() for n, layer in model.kan_layers()}


def test_regression_fits_the_uploaded_vectors_better_with_more_dims(small_model: KANModel) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "per_layer")
    coefs = _coefs(small_model)
    errors = []
    for d_emb in (1, 4):
        cfg = fast_config(d_emb=d_emb, regress_steps=300)
        learners = init_meta_learners(groups, coefs, cfg)
        loss = regress_meta_learners(learners, groups, coefs, cfg, StageHooks())
        errors.append(loss)
        # PCA init + fit explain a real share of the variance (standardised MSE < 1)
        assert loss < 0.9
    assert errors[1] < errors[0]


def test_meta_stage_returns_vectors_on_a_low_dim_manifold(
    small_model: KANModel, digits: Dataset
) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "per_layer")
    fit = make_training_set(digits, fast_config(val_fraction=0.0), CPU, small_model)
    cfg = fast_config(d_emb=1, meta_epochs=3, regress_steps=200, meta_lr=1e-2)
    calls: list[tuple[str, int, int]] = []
    meta = run_meta_stage(
        small_model,
        fit,
        layers,
        groups,
        cfg,
        device=CPU,
        hooks=StageHooks(progress=lambda s, i, n, loss: calls.append((s, i, n))),
    )
    gen = meta.vectors
    assert set(gen) == set(layers)
    for name, layer in small_model.kan_layers():
        assert gen[name].shape == (layer.n_edges, layer.coef_dim)
        # d_emb = 1: rank of the centred hidden manifold is tiny compared to L
        s = torch.linalg.svdvals(gen[name] - gen[name].mean(0))
        assert (s[0] ** 2) / (s**2).sum() > 0.5
    assert ("meta", 3, 3) in calls and any(c[0] == "regress" for c in calls)
    # the generated vectors keep most of the accuracy (tiny budget: within 20 points)
    names = {n: f"{n}.coef" for n in layers}
    _, acc = evaluate_model(
        small_model,
        digits,
        CPU,
        {names[n]: g.reshape(dict(small_model.kan_layers())[n].coef_shape) for n, g in gen.items()},
    )
    _, acc0 = evaluate_model(small_model, digits, CPU)
    assert acc > acc0 - 0.2


def test_kmeans_stage_codebook_shapes_and_error(small_model: KANModel) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "per_layer")
    coefs = _coefs(small_model)
    quant = run_kmeans_stage(
        coefs,
        groups,
        8,
        fast_config(),
        device="cpu",
        hooks=StageHooks(),
        scope="per_layer",
        layers=layers,
    )
    assert len(quant.codebooks) == len(groups) == 2
    rec = quant.layer_coefficients(small_model)
    for name in layers:
        assert rec[name].shape == coefs[name].shape
        # 8 distinct vectors per layer, and clustering beats the all-mean baseline
        assert torch.unique(rec[name], dim=0).shape[0] <= 8
        err = (rec[name] - coefs[name]).norm()
        assert err < (coefs[name] - coefs[name].mean(0)).norm()


def test_global_scope_shares_one_codebook_across_equal_grids(small_model: KANModel) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "global")
    assert len(groups) == 1 and groups[0].n_edges == small_model.n_edges()


def test_finetune_lowers_loss_and_keeps_indices(small_model: KANModel, digits: Dataset) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "per_layer")
    quant = run_kmeans_stage(
        _coefs(small_model),
        groups,
        4,
        fast_config(),
        device="cpu",
        hooks=StageHooks(),
        scope="per_layer",
        layers=layers,
    )
    idx_before = [cb.indices.clone() for cb in quant.codebooks]
    cent_before = [cb.centroids.clone() for cb in quant.codebooks]
    fit = make_training_set(digits, fast_config(val_fraction=0.0), CPU, small_model)
    losses: list[float] = []
    run_finetune_stage(
        small_model,
        fit,
        quant,
        fast_config(finetune_epochs=4),
        device=CPU,
        hooks=StageHooks(progress=lambda s, i, n, loss: losses.append(float(loss or 0))),
    )
    assert len(losses) == 4 and losses[-1] < losses[0]
    for cb, idx, cent in zip(quant.codebooks, idx_before, cent_before, strict=True):
        assert torch.equal(cb.indices, idx)
        assert not torch.equal(cb.centroids, cent)


def test_stage_cancellation_between_steps(small_model: KANModel, digits: Dataset) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "per_layer")
    polls = {"n": 0}
    fit = make_training_set(digits, fast_config(), CPU, None)

    def stop_after_two() -> bool:
        polls["n"] += 1
        return polls["n"] > 2

    with pytest.raises(CancelledError, match="cancelled during stage"):
        run_meta_stage(
            small_model,
            fit,
            layers,
            groups,
            fast_config(meta_epochs=5),
            device=CPU,
            hooks=StageHooks(should_stop=stop_after_two),
        )
    assert polls["n"] == 3


def test_soft_stage_ends_with_exactly_k_vectors_per_codebook(
    small_model: KANModel, digits: Dataset
) -> None:
    layers = _layers(small_model)
    groups = build_groups(small_model, layers, "per_layer")
    cfg = fast_config(meta_epochs=1, soft_epochs=2)
    fit = make_training_set(digits, cfg, CPU, None)
    meta = run_meta_stage(small_model, fit, layers, groups, cfg, device=CPU, hooks=StageHooks())
    calls: list[tuple[str, int, int]] = []
    hard = run_soft_stage(
        small_model,
        fit,
        layers,
        meta,
        groups,
        4,
        cfg,
        device=CPU,
        hooks=StageHooks(progress=lambda s, i, n, loss: calls.append((s, i, n))),
    )
    assert calls[-1] == ("soft", 2, 2)
    for name in layers:
        assert torch.unique(hard[name], dim=0).shape[0] <= 4
    # K-means on them is exact: zero inertia
    quant = run_kmeans_stage(
        hard, groups, 4, cfg, device="cpu", hooks=StageHooks(), scope="per_layer", layers=layers
    )
    rec = quant.layer_coefficients(small_model)
    for name in layers:
        assert torch.allclose(rec[name], hard[name], atol=1e-6)
    # the stage-1 learners are not modified (every K starts from the same meta result)
    again = run_soft_stage(
        small_model,
        fit,
        layers,
        meta,
        groups,
        4,
        cfg,
        device=CPU,
        hooks=StageHooks(),
    )
    assert all(torch.unique(again[n], dim=0).shape[0] <= 4 for n in layers)
