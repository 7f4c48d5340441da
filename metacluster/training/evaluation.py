"""Evaluation shared by training, `metacluster eval` and the compression engine.

One `predict` (optionally with substituted coefficient tensors) and one
`metric_value`, so every caller reports the same number for the same model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.data import Dataset
from metacluster.errors import IncompatibleError, InputError


def _first_leaf(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if not any(True for _ in module.children()):
            return module
    return None


def _input_layer(model: nn.Module) -> nn.Module | None:
    """The module that receives the model's input: a KANModel's first layer (its
    first leaf may be a child such as fastkan's LayerNorm), else the first leaf."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList | nn.Sequential) and len(layers) > 0:
        return layers[0]
    return _first_leaf(model)


def _param_like(model: nn.Module) -> Tensor | None:
    for p in model.parameters():
        return p
    for b in model.buffers():
        return b
    return None


def prepare_inputs(model: nn.Module, x: Tensor) -> Tensor:
    """Inputs in the shape, dtype and device the model takes.

    Image-shaped data (n, C, H, W) fed to a model whose first layer is dense
    (e.g. an efficient-kan MNIST model expecting 784 features) is flattened.
    """
    in_features = getattr(_input_layer(model), "in_features", None)
    if x.dim() > 2 and isinstance(in_features, int) and in_features == math.prod(x.shape[1:]):
        x = x.reshape(x.shape[0], -1)
    ref = _param_like(model)
    if ref is not None and ref.is_floating_point():
        x = x.to(device=ref.device, dtype=ref.dtype)
    return x


def check_compatible(model: nn.Module, data: Dataset) -> None:
    """Raise IncompatibleError unless the model takes the data's inputs and its
    outputs fit the task (>= n_classes logits, or exactly n_outputs targets)."""
    meta = getattr(model, "meta", None)
    task = meta.get("task") if isinstance(meta, dict) else None
    if task in ("classification", "regression") and task != data.task:
        raise IncompatibleError(
            f"model was trained for {task} but data set {data.name!r} is {data.task}"
        )
    in_features = getattr(_input_layer(model), "in_features", None)
    if isinstance(in_features, int) and data.x_test.dim() == 2 and in_features != data.n_features:
        raise IncompatibleError(
            f"model takes {in_features} input features but data set {data.name!r} has "
            f"{data.n_features} (input shape {list(data.input_shape)})"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(prepare_inputs(model, data.x_test[:2]))
    except (InputError, RuntimeError, ValueError) as exc:
        raise IncompatibleError(
            f"model does not accept inputs of shape {list(data.input_shape)} from data set "
            f"{data.name!r}: {exc}".splitlines()[0]
        ) from None
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise IncompatibleError(
            f"model outputs shape {list(out.shape[1:])} per sample; expected a vector"
        )
    width = int(out.shape[1])
    if data.task == "classification":
        assert data.n_classes is not None
        if width < data.n_classes:
            raise IncompatibleError(
                f"model has {width} outputs but data set {data.name!r} has {data.n_classes} classes"
            )
    elif width != data.n_outputs:
        raise IncompatibleError(
            f"model has {width} outputs but data set {data.name!r} has {data.n_outputs} regression targets"
        )


@torch.no_grad()
def predict(
    model: nn.Module,
    x: Tensor,
    coefs: dict[str, Tensor] | None = None,
    *,
    batch_size: int = 4096,
) -> Tensor:
    """Outputs of `model` for `x` in eval mode, batched, on the model's device.

    `coefs` maps qualified parameter names to tensors that replace them for this
    call (`torch.func.functional_call`); the model's own parameters are untouched.
    """
    was_training = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, x.shape[0], batch_size):
            xb = prepare_inputs(model, x[i : i + batch_size])
            outs.append(
                model(xb) if coefs is None else torch.func.functional_call(model, coefs, (xb,))
            )
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(
    model: nn.Module, data: Dataset, split: str = "test", coefs: dict[str, Tensor] | None = None
) -> tuple[str, float]:
    """("accuracy", fraction in [0, 1]) for classification, ("rmse", value) for regression."""
    x, y = data.split(split)
    check_compatible(model, data)
    return metric_value(predict(model, x, coefs), y, data.task)


def metric_value(out: Tensor, y: Tensor, task: str) -> tuple[str, float]:
    """The task metric of outputs `out` against targets `y`, computed in float64 so
    every caller (training, `metacluster eval`, the compression engine) reports the
    same number: ("accuracy", fraction) or ("rmse", value)."""
    y = y.to(out.device)
    if task == "classification":
        return "accuracy", float((out.argmax(dim=1) == y).double().mean())
    return "rmse", float(torch.sqrt(F.mse_loss(out.double(), y.double())))


__all__ = ["check_compatible", "evaluate", "metric_value", "predict", "prepare_inputs"]
