"""compress(): report contract, sweep, determinism, resume from stage checkpoints,
cancellation and clear errors for bad configs or data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compress.helpers import fast_config
from metacluster.artifact import artifact_bytes, write_artifact
from metacluster.cli import cli
from metacluster.compress import (
    ArtifactSizer,
    CompressedKAN,
    DirectoryCheckpoint,
    MemoryCheckpoint,
    compress,
)
from metacluster.data import Dataset, dataset_from_arrays
from metacluster.errors import CancelledError, ConfigError, IncompatibleError
from metacluster.formats import save_model
from metacluster.kan import build_kan
from metacluster.kan.model import KANModel
from metacluster.training import evaluate

CLI_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CONTRACT = {"metric", "before", "after", "ratio", "bytes_before", "bytes_after", "k", "stages"}


def test_report_has_contract_keys_and_consistent_numbers(
    small_model: KANModel, digits: Dataset
) -> None:
    original = {k: v.clone() for k, v in small_model.state_dict().items()}
    compressed, report = compress(small_model, fast_config(), digits, sizer=ArtifactSizer())
    d = report.to_dict()
    assert set(d) >= CONTRACT
    assert d["metric"] == "accuracy" and 0.0 <= d["after"] <= 1.0
    assert d["ratio"] == pytest.approx(d["bytes_before"] / d["bytes_after"])
    assert d["bytes_after"] == len(artifact_bytes(compressed, report))
    assert d["param_ratio"] > 1 and set(d["stages"]) >= {"meta", "kmeans", "finetune", "total"}
    assert [layer["edges"] for layer in d["layers"]] == [64 * 16, 16 * 10]
    for layer in d["layers"]:
        assert layer["k"] == [8] and layer["coef_dim"] == 9
        assert 0 < layer["coef_rel_error"] < 1.5 and 0 < layer["function_rel_error"] < 1.5
        assert layer["bytes"] > 0
    assert d["versions"]["torch"] == torch.__version__ and d["seed"] == 0
    # the user's model is untouched and the compressed one really has K vectors per layer
    for k, v in small_model.state_dict().items():
        assert torch.equal(v, original[k])
    assert isinstance(compressed, CompressedKAN)
    for _, layer in compressed.kan_layers():
        assert torch.unique(layer.edge_view().coefficients, dim=0).shape[0] <= 8


def test_fixed_seed_gives_identical_artifact_bytes(small_model: KANModel, digits: Dataset) -> None:
    a, ra = compress(small_model, fast_config(seed=3), digits)
    b, rb = compress(small_model, fast_config(seed=3), digits)
    assert artifact_bytes(a, ra) == artifact_bytes(b, rb)


def test_sweep_runs_meta_once_and_recommends_smallest_good_k(
    small_model: KANModel, digits: Dataset
) -> None:
    stages: list[str] = []
    _, report = compress(
        small_model,
        fast_config(k=[2, 4, 8], max_drop=1.0),
        digits,
        progress=lambda s, i, n, loss: stages.append(s),
        sizer=ArtifactSizer(),
    )
    assert [row["k"] for row in report.sweep] == [2, 4, 8]
    visits = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert visits.count("meta") == 1  # one meta stage, not one per K
    assert visits.count("finetune") == 3  # the per-K stages, once per K
    assert report.recommended_k == 2 and report.k == 2  # max_drop=1: anything qualifies
    # bytes grow with K
    sizes = [row["bytes_after"] for row in report.sweep]
    assert sizes == sorted(sizes)
    _, strict = compress(small_model, fast_config(k=[2, 4], max_drop=0.0, meta_epochs=1), digits)
    if strict.recommended_k is None:  # nothing lossless: the most accurate K is returned
        assert strict.after == max(r["after"] for r in strict.sweep)


def _stages_seen(progress_calls: list[tuple[str, int, int]]) -> list[str]:
    return [s for s, _, _ in progress_calls]


def test_resume_skips_finished_stages_and_gives_same_result(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    cfg = fast_config(k=[4, 8])
    ckpt = DirectoryCheckpoint(tmp_path / "ckpt")
    first, r1 = compress(small_model, cfg, digits, checkpoint=ckpt)
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.json"))
    assert saved == [
        "finetune_k4.json",
        "finetune_k8.json",
        "kmeans_k4.json",
        "kmeans_k8.json",
        "meta.json",
        "soft_k4.json",
        "soft_k8.json",
    ]
    calls: list[tuple[str, int, int]] = []
    again, r2 = compress(
        small_model,
        cfg,
        digits,
        checkpoint=DirectoryCheckpoint(tmp_path / "ckpt"),
        progress=lambda s, i, n, loss: calls.append((s, i, n)),
    )
    # every stage restored (one report call each), none retrained
    assert all((i, n) == (1, 1) for _, i, n in calls)
    assert "regress" not in _stages_seen(calls)
    assert artifact_bytes(first, r1) == artifact_bytes(again, r2)


def test_resume_after_a_worker_died_mid_run(small_model: KANModel, digits: Dataset) -> None:
    cfg = fast_config(k=[4, 8])
    full_model, full = compress(small_model, cfg, digits)
    ckpt = MemoryCheckpoint()

    class Died(Exception):
        pass

    def die_in_second_finetune(stage: str, step: int, total: int, loss: float | None) -> None:
        if stage == "finetune" and "finetune_k4" in ckpt.stages:
            raise Died

    with pytest.raises(Died):
        compress(small_model, cfg, digits, checkpoint=ckpt, progress=die_in_second_finetune)
    assert set(ckpt.stages) == {
        "meta",
        "soft_k4",
        "kmeans_k4",
        "finetune_k4",
        "soft_k8",
        "kmeans_k8",
    }
    resumed_model, resumed = compress(small_model, cfg, digits, checkpoint=ckpt)
    assert artifact_bytes(resumed_model, resumed) == artifact_bytes(full_model, full)


def test_checkpoint_of_another_config_is_ignored(small_model: KANModel, digits: Dataset) -> None:
    ckpt = MemoryCheckpoint()
    compress(small_model, fast_config(k=4), digits, checkpoint=ckpt)
    calls: list[str] = []
    compress(
        small_model,
        fast_config(k=4, seed=1),
        digits,
        checkpoint=ckpt,
        progress=lambda s, i, n, loss: calls.append(s),
    )
    assert "regress" in calls  # recomputed, not restored


def test_cancellation_raises_between_steps(small_model: KANModel, digits: Dataset) -> None:
    seen: list[str] = []
    stop = {"now": False}

    def progress(stage: str, step: int, total: int, loss: float | None) -> None:
        seen.append(stage)
        if stage == "meta":
            stop["now"] = True

    with pytest.raises(CancelledError) as info:
        compress(
            small_model,
            fast_config(meta_epochs=3),
            digits,
            progress=progress,
            should_stop=lambda: stop["now"],
        )
    assert info.value.code == "cancelled"
    assert seen.count("meta") == 1 and "kmeans" not in seen


def test_plain_kmeans_baseline_skips_the_meta_learner(
    small_model: KANModel, digits: Dataset
) -> None:
    stages: list[str] = []
    _, report = compress(
        small_model,
        fast_config(method="kmeans"),
        digits,
        progress=lambda s, i, n, loss: stages.append(s),
    )
    assert "meta" not in stages and "regress" not in stages
    assert report.method == "kmeans" and report.metric_meta is None


def test_bad_configs_give_clear_errors(small_model: KANModel, digits: Dataset) -> None:
    with pytest.raises(
        ConfigError, match=r"k=5000 exceeds the number of edges to compress \(1184\)"
    ):
        compress(small_model, fast_config(k=5000), digits)
    with pytest.raises(ConfigError, match="no KAN layer matches"):
        compress(small_model, fast_config(include=["nothing*"]), digits)
    with pytest.raises(ConfigError, match="d_emb must be"):
        compress(small_model, fast_config(d_emb=7), digits)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            compress(small_model, fast_config(device="cuda"), digits)


def test_dataset_that_does_not_fit_the_model(small_model: KANModel) -> None:
    rng = np.random.default_rng(0)
    wrong_inputs = dataset_from_arrays(
        "wrong",
        rng.normal(size=(20, 5)).astype(np.float32),
        rng.integers(0, 10, 20),
        rng.normal(size=(5, 5)).astype(np.float32),
        rng.integers(0, 10, 5),
        n_classes=10,
    )
    with pytest.raises(
        IncompatibleError, match=r"model takes 64 input features but data set 'wrong' has 5"
    ):
        compress(small_model, fast_config(), wrong_inputs)
    # 10 logits cannot score 12 classes (the same rule as `metacluster eval`)
    too_many_classes = dataset_from_arrays(
        "twelve",
        rng.normal(size=(20, 64)).astype(np.float32),
        rng.integers(0, 12, 20),
        rng.normal(size=(5, 64)).astype(np.float32),
        rng.integers(0, 12, 5),
        n_classes=12,
    )
    with pytest.raises(IncompatibleError, match="10 outputs but data set 'twelve' has 12 classes"):
        compress(small_model, fast_config(), too_many_classes)
    regression = dataset_from_arrays(
        "targets",
        rng.normal(size=(20, 64)).astype(np.float32),
        rng.normal(size=(20, 1)).astype(np.float32),
        rng.normal(size=(5, 64)).astype(np.float32),
        rng.normal(size=(5, 1)).astype(np.float32),
    )
    with pytest.raises(IncompatibleError, match=r"10 outputs but .* 1 regression targets"):
        compress(small_model, fast_config(), regression)


def test_model_with_more_logits_than_uploaded_classes_is_accepted(
    small_model: KANModel, digits: Dataset
) -> None:
    # An uploaded data set need not contain the last class: digits 0-2 only, scored
    # by the 10-logit model exactly as `metacluster eval` scores it.
    keep_train, keep_test = digits.y_train < 3, digits.y_test < 3
    subset = dataset_from_arrays(
        "digits012",
        digits.x_train[keep_train].numpy(),
        digits.y_train[keep_train].numpy(),
        digits.x_test[keep_test].numpy(),
        digits.y_test[keep_test].numpy(),
        n_classes=3,
    )
    assert subset.n_classes == 3
    _, report = compress(small_model, fast_config(), subset)
    assert report.before == evaluate(small_model, subset)[1]
    assert 0.0 <= report.after <= 1.0


def test_engine_and_cli_eval_report_identical_numbers(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    compressed, report = compress(small_model, fast_config(), digits)
    artifact = tmp_path / "c.mcz"
    write_artifact(compressed, artifact, report)
    source = tmp_path / "m.safetensors"
    save_model(small_model, source)
    for path, expected in ((source, report.before), (artifact, report.after)):
        result = CliRunner().invoke(
            cli, ["eval", str(path), "--data", "digits", "--json"], env=CLI_ENV
        )
        assert result.exit_code == 0, result.output
        ev = json.loads(result.stdout)
        assert ev["metric"] == report.metric == "accuracy"
        assert ev["value"] == expected  # bit-identical, not approximately equal
    # both report float64 fractions of hits: n_correct / n_test exactly
    out = compressed(digits.x_test)
    hits = int((out.argmax(1) == digits.y_test).sum())
    assert report.after == hits / digits.n_test


def test_image_data_reaches_dense_models_as_in_training() -> None:
    # An imported dense KAN has no Flatten: the engine flattens (n, C, H, W) inputs
    # the way metacluster.training does, for every dense family (fastkan's first
    # leaf module is a LayerNorm, not the layer that declares in_features).
    rng = np.random.default_rng(0)
    images = dataset_from_arrays(
        "img",
        rng.uniform(-1, 1, (40, 1, 4, 4)).astype(np.float32),
        rng.integers(0, 3, 40),
        rng.uniform(-1, 1, (12, 1, 4, 4)).astype(np.float32),
        rng.integers(0, 3, 12),
        n_classes=3,
    )
    for family in ("bspline", "rbf"):
        torch.manual_seed(0)
        model = build_kan(family, [16, 4, 3])
        _, report = compress(model, fast_config(k=4), images)
        assert report.before == evaluate(model, images)[1]


def test_include_exclude_keeps_other_layers_dense(small_model: KANModel, digits: Dataset) -> None:
    compressed, report = compress(
        small_model, fast_config(exclude=["layers.1"]), digits, sizer=ArtifactSizer()
    )
    assert [(layer["name"], layer["mode"]) for layer in report.layers] == [
        ("layers.0", "codebook"),
        ("layers.1", "dense"),
    ]
    assert compressed.quantized.layers == ["layers.0"]
    dense = report.layers[1]
    assert dense["bytes_breakdown"]["dense"] == 4 * 16 * 10 * 9  # fine-tuned, stored dense


def test_from_scratch_trains_an_untrained_kan_through_its_meta_learner(digits: Dataset) -> None:
    from metacluster.kan import build_kan

    torch.manual_seed(1)
    fresh = build_kan("bspline", [64, 16, 10])
    cfg = fast_config(
        mode="from_scratch", meta_epochs=10, meta_lr=1e-2, soft_epochs=2, k=8, batch_size=64
    )
    _, report = compress(fresh, cfg, digits)
    assert report.before < 0.3  # untrained source
    assert report.metric_meta is not None and report.metric_meta > 0.6
    assert report.after > 0.5
