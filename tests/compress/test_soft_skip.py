"""The default effort skips the clustering-aware stage where its budget buys too few
steps (MNIST 784-256-10), and the soft quantizer's one-product form is the DKM softmax."""

from __future__ import annotations

import pytest
import torch

from metacluster.compress import MetaClusterConfig, plan
from metacluster.compress.numeric.codebook import build_groups
from metacluster.compress.spec.effort import PRESETS, runs_soft, step_cap, work_per_sample
from metacluster.compress.stages.soft import SoftQuantizer
from metacluster.kan import build_kan, describe_model


def _stages(widths: list[int], effort: str) -> list[str]:
    model = build_kan("bspline", widths)
    cfg = MetaClusterConfig(target_ratio=80, effort=effort, device="cpu")
    return [s.name for s in plan(describe_model(model), None, cfg).stages]


def test_the_default_skips_the_soft_stage_only_where_it_would_get_too_few_steps() -> None:
    assert "soft" in _stages([784, 64, 10], "default")  # 179 steps: it runs
    assert "soft" not in _stages([784, 256, 10], "default")  # 45 steps: skipped
    assert "soft" in _stages([784, 256, 10], "best")
    assert "soft" not in _stages([784, 64, 10], "fast")
    assert "finetune" in _stages([784, 256, 10], "default")


def test_runs_soft_reads_the_budget_before_the_floor() -> None:
    default = PRESETS["default"]
    work = work_per_sample([type("L", (), {"edges": 784 * 256 + 2560, "coef_dim": 9})()])
    assert step_cap(default, "soft", 256, work) == default.floor  # the floor hides it
    assert not runs_soft(default, 256, work)
    assert runs_soft(default, 256, work // 8)


@pytest.mark.parametrize("frac", [0.0, 0.5, 1.0])
def test_the_soft_assignment_is_the_softmax_of_scaled_distances(frac: float) -> None:
    torch.manual_seed(0)
    model = build_kan("bspline", [6, 5])
    name = next(n for n, _ in model.kan_layers())
    layer = dict(model.kan_layers())[name]
    vectors = torch.randn(layer.n_edges, layer.coef_dim) * torch.linspace(0.1, 2.0, 9)
    groups = build_groups(model, [name], "per_layer", "shared")
    soft = SoftQuantizer(groups, {name: vectors}, 4, seed=0)
    soft.frac = frac
    scale, c = soft.scales[0], soft.centroids[0].detach()
    d = (((vectors[:, None, :] - c[None]) / scale) ** 2).mean(2)
    tau = soft.tau0[0] * (1e-3**frac)
    expected = torch.softmax(-d / tau, dim=1) @ c
    with torch.no_grad():
        got = soft({name: vectors})[name]
        hard = soft({name: vectors}, hard=True)[name]
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(hard, c[d.argmin(1)])
