"""Plain stacks of one library's KAN layers with LayerNorm glue between them.

Finds the layer modules by a characteristic key, the LayerNorms by their
(weight, bias) pair, and orders both as the forward pass runs them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn

from metacluster.formats._checkpoint import Checkpoint, module_order, module_prefixes
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    layernorm_from,
    layers_of,
)
from metacluster.kan import KANLayer, KANModel, LayerNorm


def leaves_by_module(ckpt: Checkpoint) -> dict[str, set[str]]:
    """Module prefix ("" or ending with '.') -> names of its own tensors."""
    out: dict[str, set[str]] = defaultdict(set)
    for key in ckpt.tensors:
        prefix, _, leaf = key.rpartition(".")
        out[prefix + "." if prefix else ""].add(leaf)
    return out


def layernorm_prefixes(ckpt: Checkpoint, exclude: set[str]) -> list[str]:
    """Modules holding exactly a 1-D weight and bias of one size: LayerNorms."""
    found = []
    for prefix, leaves in leaves_by_module(ckpt).items():
        if prefix in exclude or leaves != {"weight", "bias"}:
            continue
        w, b = ckpt.tensors[prefix + "weight"], ckpt.tensors[prefix + "bias"]
        if w.dim() == 1 and b.dim() == 1 and w.shape == b.shape:
            found.append(prefix)
    return found


def stack_modules(ckpt: Checkpoint, leaf: str) -> list[tuple[str, str]]:
    """[(kind, prefix)] in forward order; kind is "kan" or "layernorm"."""
    kan = module_prefixes(ckpt, leaf)
    norms = layernorm_prefixes(ckpt, set(kan))
    kinds = {p: "kan" for p in kan} | {p: "layernorm" for p in norms}
    return [(kinds[p], p) for p in module_order(ckpt, list(kinds))]


def load_layernorm(keys: KeyTracker, prefix: str) -> LayerNorm:
    return layernorm_from(keys.get(prefix + "weight", 1), keys.get(prefix + "bias", 1))


class LayerStackFormat(FormatHandler):
    """A library whose users stack its one layer class, with LayerNorms between.

    Subclasses name the characteristic tensor (`leaf`), the layer class (whose family
    the model gets), and how one layer's tensors map to and from it; the stacking,
    glue and checks are here.
    """

    leaf: ClassVar[str]
    layer_type: ClassVar[type[KANLayer]]

    def matches(self, ckpt: Checkpoint) -> bool:
        return any(k == self.leaf or k.endswith("." + self.leaf) for k in ckpt.tensors)

    @abstractmethod
    def load_layer(self, keys: KeyTracker, prefix: str) -> KANLayer:
        """The layer whose tensors start with `prefix`."""

    @abstractmethod
    def export_layer(self, layer: KANLayer, prefix: str, state: dict[str, Tensor]) -> None:
        """Write one layer's tensors under `prefix` in the library's layout."""

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers: list[nn.Module] = []
        for kind, prefix in stack_modules(ckpt, self.leaf):
            if kind == "layernorm":
                layers.append(load_layernorm(keys, prefix))
            else:
                layers.append(self.load_layer(keys, prefix))
        return self.assemble(keys, layers, self.layer_type.family)

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, Tensor] = {}
        for pos, layer in enumerate(layers_of(model, self.name, (self.layer_type, nn.LayerNorm))):
            if isinstance(layer, self.layer_type):
                self.export_layer(layer, f"layers.{pos}.", state)
            else:
                assert isinstance(layer, nn.LayerNorm)
                state[f"layers.{pos}.weight"] = layer.weight.detach().clone()
                state[f"layers.{pos}.bias"] = layer.bias.detach().clone()
        save_torch_state(state, path)
        return [path]
