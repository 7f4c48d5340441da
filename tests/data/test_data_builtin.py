"""Built-in data sets: digits, MNIST-1D (generated, cached as .npz) and eq: tasks."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from metacluster.data import EQUATIONS, Dataset, list_equations, load_dataset
from metacluster.errors import DatasetError


class TestDigits:
    def test_shapes_scaling_and_stratified_split(self) -> None:
        d = load_dataset("digits")
        assert d.task == "classification" and d.n_classes == 10
        assert d.input_shape == (64,)
        assert (d.n_train, d.n_test) == (1437, 360)
        assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
        assert float(d.x_train.min()) == -1.0 and float(d.x_train.max()) == 1.0
        # stratified: every class has 35-37 of the 360 test images
        counts = torch.bincount(d.y_test, minlength=10)
        assert int(counts.min()) >= 35 and int(counts.max()) <= 37

    def test_seed_changes_split_deterministically(self) -> None:
        a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", seed=1)
        assert torch.equal(a.x_test, b.x_test)
        assert not torch.equal(a.x_test, c.x_test)

    def test_test_fraction_option(self) -> None:
        d = load_dataset("digits?test_fraction=0.5")
        assert abs(d.n_test - 1797 / 2) <= 1


class TestMnist1d:
    def test_generated_standardised_and_cached(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("METACLUSTER_DATA_DIR", str(tmp_path))
        np.random.seed(123)
        random.seed(123)
        before = (np.random.rand(), random.random())
        np.random.seed(123)
        random.seed(123)
        d = load_dataset("mnist1d?num_samples=200")
        # loading does not disturb the caller's global random streams
        assert (np.random.rand(), random.random()) == before
        assert d.input_shape == (40,) and d.n_classes == 10
        assert (d.n_train, d.n_test) == (160, 40)
        x = torch.cat([d.x_train, d.x_test])
        assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-2
        cached = list((tmp_path / "cache").glob("mnist1d-*.npz"))
        assert len(cached) == 1
        with np.load(cached[0], allow_pickle=False) as npz:
            assert np.array_equal(npz["x_test"], d.x_test.numpy())
        again = load_dataset("mnist1d?num_samples=200")
        assert torch.equal(again.x_train, d.x_train)

    def test_damaged_cache_is_regenerated(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("METACLUSTER_DATA_DIR", str(tmp_path))
        first = load_dataset("mnist1d?num_samples=100")
        (cached,) = (tmp_path / "cache").glob("mnist1d-*.npz")
        cached.write_bytes(b"garbage")
        second = load_dataset("mnist1d?num_samples=100")
        assert torch.equal(first.x_train, second.x_train)

    def test_unknown_option(self) -> None:
        with pytest.raises(DatasetError, match="unknown option 'bogus'"):
            load_dataset("mnist1d?bogus=1")


class TestEquations:
    def test_at_least_six_equations_from_2_to_100_inputs(self) -> None:
        listed = list_equations()
        assert len(listed) >= 6
        sizes = {int(e["n_vars"]) for e in listed}  # type: ignore[call-overload]
        assert min(sizes) == 2 and max(sizes) == 100

    @pytest.mark.parametrize("name", sorted(EQUATIONS))
    def test_targets_follow_the_formula(self, name: str) -> None:
        d = load_dataset(f"eq:{name}?n_train=64&n_test=32")
        eq = EQUATIONS[name]
        assert d.task == "regression" and d.n_classes is None
        assert d.input_shape == (eq.n_vars,) and d.y_train.shape == (64, 1)
        expected = eq.fn(d.x_test.double())[:, None].float()
        torch.testing.assert_close(d.y_test, expected, rtol=1e-5, atol=1e-5)
        ranges = eq.ranges * eq.n_vars if len(eq.ranges) == 1 else eq.ranges
        lo = torch.tensor([r[0] for r in ranges])
        hi = torch.tensor([r[1] for r in ranges])
        assert bool((d.x_train >= lo).all() and (d.x_train <= hi).all())

    def test_pykan_toy_formula_values(self) -> None:
        d = load_dataset("eq:exp_sinpi_plus_sq?n_train=10&n_test=10")
        x = d.x_train.double()
        y = torch.exp(torch.sin(torch.pi * x[:, 0]) + x[:, 1] ** 2)
        torch.testing.assert_close(d.y_train[:, 0].double(), y, rtol=1e-6, atol=1e-6)

    def test_seeded_and_does_not_touch_global_rng(self) -> None:
        torch.manual_seed(5)
        expected = torch.rand(3)
        torch.manual_seed(5)
        a = load_dataset("eq:xy", seed=3)
        assert torch.equal(torch.rand(3), expected)
        b = load_dataset("eq:xy", seed=3)
        c = load_dataset("eq:xy", seed=4)
        assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
        assert (a.n_train, a.n_test) == (1000, 1000)

    def test_noise_only_on_train_targets(self) -> None:
        clean = load_dataset("eq:xy?n_train=500&n_test=50")
        noisy = load_dataset("eq:xy?n_train=500&n_test=50&noise=0.1")
        assert torch.equal(clean.x_train, noisy.x_train)
        assert 0.08 < float((noisy.y_train - clean.y_train).std()) < 0.12

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("eq:nope", "unknown equation 'nope'"),
            ("eq:xy?n_train=abc", "not a valid int"),
            ("eq:xy?n_train=0", "must be >= 1"),
            ("eq:xy?noise=-1", "noise must be"),
            ("eq:xy?size=3", "unknown option 'size'"),
            ("nonexistent-thing", "no such data set or file"),
            ("", "non-empty"),
        ],
    )
    def test_bad_specs(self, spec: str, message: str) -> None:
        with pytest.raises(DatasetError, match=message):
            load_dataset(spec)


def test_summary_is_json_ready() -> None:
    d: Dataset = load_dataset("eq:feynman_I_12_11?n_train=8&n_test=4")
    assert d.summary() == {
        "name": "eq:feynman_I_12_11",
        "task": "regression",
        "n_train": 8,
        "n_test": 4,
        "input_shape": [5],
        "n_classes": None,
    }
    assert d.n_outputs == 1 and d.n_features == 5


def test_bool_labels_are_two_classes_and_bad_split_name() -> None:
    from metacluster.data import dataset_from_arrays

    d = dataset_from_arrays(
        "b",
        np.zeros((4, 2)),
        np.array([True, False, True, True]),
        np.zeros((2, 2)),
        np.array([False, True]),
    )
    assert d.task == "classification" and d.n_classes == 2 and d.y_train.tolist() == [1, 0, 1, 1]
    with pytest.raises(DatasetError, match="unknown split 'valid'"):
        d.split("valid")
