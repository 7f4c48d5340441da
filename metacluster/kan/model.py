"""KANModel: a stack of KAN layers and glue modules that describes itself.

`model.config()` is JSON and `KANModel.from_config(cfg)` rebuilds the same
architecture; weights travel in the state dict (keys ``layers.{i}.<param>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from metacluster.kan.base import EdgeView, KANLayer

# type name -> class; classes register themselves with @register_module("name").
MODULE_TYPES: dict[str, type[nn.Module]] = {}


def register_module(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODULE_TYPES and MODULE_TYPES[name] is not cls:
            raise ValueError(f"module type {name!r} registered twice")
        MODULE_TYPES[name] = cls
        cls.module_type = name  # type: ignore[attr-defined]
        return cls

    return deco


def module_config(module: nn.Module) -> dict[str, Any]:
    """{"type": name, **kwargs} of a registered module."""
    name = getattr(module, "module_type", None)
    config = getattr(module, "config", None)
    if name is None or not callable(config):
        raise TypeError(f"{type(module).__name__} is not a registered KAN model module")
    return {"type": name, **config()}


def build_module(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    name = spec.pop("type", None)
    if name not in MODULE_TYPES:
        raise ValueError(f"unknown module type {name!r}; known: {sorted(MODULE_TYPES)}")
    return MODULE_TYPES[name](**spec)


class KANModel(nn.Module):
    """Sequential stack of registered modules with provenance metadata.

    meta: JSON-able facts about where the model came from, e.g.
    ``{"family": "bspline", "format": "efficient-kan", "task": "classification"}``.
    """

    def __init__(self, layers: list[nn.Module], meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.meta: dict[str, Any] = dict(meta or {})

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def kan_layers(self) -> Iterator[tuple[str, KANLayer]]:
        """(qualified name, layer) of every KAN layer, in forward order."""
        for name, module in self.named_modules():
            if isinstance(module, KANLayer):
                yield name, module

    def edge_views(self) -> list[EdgeView]:
        return [layer.edge_view(name) for name, layer in self.kan_layers()]

    @property
    def family(self) -> str:
        fams = sorted({layer.family for _, layer in self.kan_layers()})
        return "+".join(fams) if fams else "none"

    def config(self) -> dict[str, Any]:
        return {"layers": [module_config(m) for m in self.layers], "meta": self.meta}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KANModel:
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("model config must be an object with a 'layers' list")
        return cls([build_module(s) for s in config["layers"]], meta=config.get("meta"))

    def n_params(self) -> int:
        return sum(int(p.numel()) for p in self.parameters())

    def n_edges(self) -> int:
        return sum(layer.n_edges for _, layer in self.kan_layers())

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        was_training = self.training
        self.eval()
        try:
            outs = [self(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0)
