"""train_model / evaluate / check_compatible / build_model_for on small real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metacluster.data import Dataset, dataset_from_arrays, load_dataset
from metacluster.errors import CancelledError, ConfigError, IncompatibleError
from metacluster.kan import BSplineKANLayer, Flatten, KANModel, build_kan
from metacluster.training import (
    build_model_for,
    check_compatible,
    data_grid_range,
    evaluate,
    metric_value,
    prepare_inputs,
    resolve_device,
    train_model,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def xy() -> Dataset:
    return load_dataset("eq:xy?n_train=400&n_test=200")


def _model(data: Dataset, hidden: int = 16, seed: int = 0, family: str = "bspline") -> KANModel:
    torch.manual_seed(seed)
    return build_model_for(data, family, [data.n_features, hidden, data.n_outputs])


class TestTrainModel:
    def test_digits_learns_well_above_chance(self, digits: Dataset) -> None:
        model = _model(digits)
        _, before = evaluate(model, digits)
        result = train_model(model, digits, epochs=4, batch_size=64)
        assert result["metric"] == "accuracy"
        assert before < 0.3 and result["value"] > 0.88
        assert result["steps"] == 4 * math.ceil(digits.n_train / 64)
        # the reported value is what evaluate() measures on the trained model
        assert evaluate(model, digits) == ("accuracy", result["value"])

    def test_regression_rmse_drops(self, xy: Dataset) -> None:
        model = _model(xy, hidden=4)
        _, rmse0 = evaluate(model, xy)
        result = train_model(model, xy, epochs=30, lr=1e-2, batch_size=50)
        assert result["metric"] == "rmse"
        assert result["value"] < 0.2 * rmse0 and result["value"] < 0.05

    def test_same_seed_same_weights(self, xy: Dataset) -> None:
        a, b = _model(xy, 4), _model(xy, 4)
        train_model(a, xy, epochs=2, seed=3)
        train_model(b, xy, epochs=2, seed=3)
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb), name
        c = _model(xy, 4)
        train_model(c, xy, epochs=2, seed=4)  # other batch order
        assert not torch.equal(a.state_dict()["layers.0.coef"], c.state_dict()["layers.0.coef"])

    def test_progress_once_per_epoch(self, xy: Dataset) -> None:
        calls: list[tuple[str, int, int, float | None]] = []
        train_model(_model(xy, 4), xy, epochs=3, progress=lambda *a: calls.append(a))
        assert [c[:3] for c in calls] == [("train", 1, 3), ("train", 2, 3), ("train", 3, 3)]
        assert all(c[3] is not None and c[3] > 0 for c in calls)

    def test_should_stop_cancels_between_steps(self, xy: Dataset) -> None:
        polls = iter(range(100))
        with pytest.raises(CancelledError, match="epoch 1/5"):
            train_model(_model(xy, 4), xy, epochs=5, should_stop=lambda: next(polls) >= 3)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"epochs": 0}, "epochs must be"),
            ({"epochs": 1, "lr": -1.0}, "learning rate"),
            ({"epochs": 1, "lr": float("nan")}, "learning rate"),
            ({"epochs": 1, "batch_size": 0}, "batch size"),
            ({"epochs": 1, "weight_decay": -0.1}, "weight decay"),
        ],
    )
    def test_bad_arguments(self, xy: Dataset, kwargs: dict[str, float], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            train_model(_model(xy, 4), xy, **kwargs)  # type: ignore[arg-type]

    def test_divergence_is_reported(self, xy: Dataset) -> None:
        with pytest.raises(ConfigError, match="diverged"):
            train_model(_model(xy, 4), xy, epochs=3, lr=1e30)


class TestEvaluate:
    def test_accuracy_is_the_fraction_of_argmax_hits(self, digits: Dataset) -> None:
        model = _model(digits)
        with torch.no_grad():
            expected = (model(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
        metric, value = evaluate(model, digits)
        assert metric == "accuracy" and value == pytest.approx(expected, abs=1e-12)
        _, train_value = evaluate(model, digits, split="train")
        assert 0.0 <= train_value <= 1.0

    def test_metric_is_computed_in_float64(self) -> None:
        # 349 of 360: the float32 mean is 0.96944445, the fraction is 0.969444...4
        y = torch.arange(360) % 10
        out = torch.nn.functional.one_hot(y, 10).float()
        out[:11] = torch.nn.functional.one_hot((y[:11] + 1) % 10, 10).float()
        assert float((out.argmax(1) == y).float().mean()) != 349 / 360
        assert metric_value(out, y, "classification") == ("accuracy", 349 / 360)
        target = torch.tensor([[0.0], [3.0]])
        assert metric_value(torch.zeros(2, 1), target, "regression") == (
            "rmse",
            math.sqrt(4.5),
        )

    def test_rmse(self, xy: Dataset) -> None:
        model = _model(xy, 4)
        with torch.no_grad():
            err = (model(xy.x_test).double() - xy.y_test.double()).pow(2).mean().sqrt().item()
        metric, value = evaluate(model, xy)
        assert metric == "rmse" and value == pytest.approx(err, rel=1e-9)

    def test_float64_model(self, xy: Dataset) -> None:
        model = _model(xy, 4).double()
        metric, value = evaluate(model, xy)
        assert metric == "rmse" and math.isfinite(value)


class TestCompatibility:
    def test_wrong_input_size(self, digits: Dataset) -> None:
        with pytest.raises(
            IncompatibleError, match="takes 2 input features but data set 'digits' has 64"
        ):
            check_compatible(build_kan("bspline", [2, 10]), digits)

    def test_too_few_classes(self, digits: Dataset) -> None:
        torch.manual_seed(0)
        model = build_kan("bspline", [64, 8, 5])
        with pytest.raises(
            IncompatibleError, match="5 outputs but data set 'digits' has 10 classes"
        ):
            evaluate(model, digits)

    def test_regression_target_count(self, xy: Dataset) -> None:
        model = build_kan("bspline", [2, 3])
        with pytest.raises(IncompatibleError, match=r"3 outputs but .* 1 regression targets"):
            check_compatible(model, xy)

    def test_task_recorded_in_meta(self, digits: Dataset) -> None:
        model = build_kan("bspline", [64, 10])
        model.meta["task"] = "regression"
        with pytest.raises(IncompatibleError, match="trained for regression"):
            check_compatible(model, digits)

    def test_image_data_is_flattened_for_dense_models(self) -> None:
        rng = np.random.default_rng(0)
        images = dataset_from_arrays(
            "img",
            rng.uniform(-1, 1, (30, 1, 4, 4)),
            rng.integers(0, 3, 30),
            rng.uniform(-1, 1, (9, 1, 4, 4)),
            rng.integers(0, 3, 9),
        )
        plain = build_kan("bspline", [16, 3])  # e.g. imported efficient-kan: no Flatten
        assert prepare_inputs(plain, images.x_test).shape == (9, 16)
        check_compatible(plain, images)
        # fastkan's first leaf module is its LayerNorm: the layer itself declares in_features
        rbf = build_kan("rbf", [16, 3])
        assert prepare_inputs(rbf, images.x_test).shape == (9, 16)
        check_compatible(rbf, images)
        metric, value = evaluate(rbf, images)
        with torch.no_grad():
            hits = int((rbf(images.x_test.reshape(9, 16)).argmax(1) == images.y_test).sum())
        assert (metric, value) == ("accuracy", hits / 9)
        with pytest.raises(IncompatibleError, match=r"does not accept inputs of shape \[1, 4, 4\]"):
            check_compatible(build_kan("rbf", [2, 3]), images)
        built = build_model_for(images, "bspline", [16, 5, 3])
        assert isinstance(built.layers[0], Flatten)
        result = train_model(built, images, epochs=2)
        assert 0.0 <= result["value"] <= 1.0


class TestBuildModelFor:
    def test_first_layer_grid_covers_the_data(self) -> None:
        rng = np.random.default_rng(0)
        wide = dataset_from_arrays(
            "wide",
            rng.uniform(-4, 3, (50, 3)),
            rng.normal(size=50),
            rng.uniform(-4, 3, (5, 3)),
            rng.normal(size=5),
        )
        lo, hi = data_grid_range(wide)
        x = wide.x_train.double().numpy().ravel()
        assert lo == pytest.approx(np.quantile(x, 0.005)) and hi == pytest.approx(
            np.quantile(x, 0.995)
        )
        assert x.min() < lo < -3.8 and 2.8 < hi < x.max()
        model = build_model_for(wide, "bspline", [3, 4, 1])
        first, second = (m for m in model.layers if isinstance(m, BSplineKANLayer))
        assert first.grid_range == pytest.approx((lo, hi))
        assert second.grid_range == pytest.approx((lo, hi))  # hidden layers too
        assert model.meta["task"] == "regression"

    def test_data_inside_unit_range_keeps_default_grid(self, digits: Dataset) -> None:
        assert data_grid_range(digits) == (-1.0, 1.0)

    def test_rare_outliers_do_not_stretch_the_grid(self) -> None:
        rng = np.random.default_rng(1)
        x = rng.uniform(-1, 1, (1000, 2))
        x[0, 0] = 100.0
        data = dataset_from_arrays("o", x, rng.normal(size=1000), x[:5], rng.normal(size=5))
        assert data_grid_range(data) == (-1.0, 1.0)

    @pytest.mark.parametrize(
        ("widths", "message"),
        [([63, 10], "first width 63"), ([64, 9], "last width 9"), ([10], "at least an input")],
    )
    def test_width_mismatch(self, digits: Dataset, widths: list[int], message: str) -> None:
        with pytest.raises((IncompatibleError, ConfigError), match=message):
            build_model_for(digits, "bspline", widths)

    def test_unknown_family(self, digits: Dataset) -> None:
        with pytest.raises(ConfigError, match="unknown KAN family 'nope'"):
            build_model_for(digits, "nope", [64, 10])

    def test_conv_family_needs_an_image_shape(self, digits: Dataset) -> None:
        with pytest.raises(ConfigError, match="needs image inputs"):
            build_model_for(digits, "conv_bspline", [10])
        with pytest.raises(IncompatibleError, match="does not match"):
            build_model_for(digits, "conv_bspline", [10], input_shape=(1, 4, 4))
        torch.manual_seed(0)
        model = build_model_for(digits, "conv_bspline", [10], input_shape=(1, 8, 8), channels=[2])
        check_compatible(model, digits)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu-please")


# Not `slow`: the four take about 15 s together, and a family that stops learning
# must fail CI, not an opt-in run.
@pytest.mark.parametrize(
    ("family", "floor"), [("bspline", 0.96), ("rbf", 0.93), ("chebyshev", 0.93), ("fourier", 0.93)]
)
def test_families_train_well_on_digits(digits: Dataset, family: str, floor: float) -> None:
    torch.manual_seed(0)
    model = build_model_for(digits, family, [64, 32, 10])
    result = train_model(model, digits, epochs=30)
    assert result["value"] >= floor, result
