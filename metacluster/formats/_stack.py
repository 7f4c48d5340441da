"""Plain stacks of one library's KAN layers with LayerNorm glue between them.

Finds the layer modules by a characteristic key, the LayerNorms by their
(weight, bias) pair, and orders both as the forward pass runs them.
"""

from __future__ import annotations

from collections import defaultdict

from metacluster.formats._checkpoint import Checkpoint, module_order, module_prefixes


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
