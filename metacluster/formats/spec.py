"""The "spec" format: a short JSON description of a user's own wrapper module.

Example (passed as `spec=` or saved as `<checkpoint>.spec.json` beside it)::

    {"layers": [
        {"kind": "flatten"},
        {"kind": "efficient-kan", "prefix": "encoder.kan.", "options": {"base_activation": "silu"}},
        {"kind": "layernorm", "prefix": "encoder.norm."},
        {"kind": "chebykan", "prefix": "head.cheby."},
        {"kind": "linear", "prefix": "classifier."}],
     "ignore": ["aux_head."]}

KAN kinds are the library formats (efficient-kan, fastkan, chebykan, fourierkan,
torch-conv-kan, flashkan, inkan, kat, convkan, rkan,
kaconv): the keys under `prefix` are read by that format's importer
(one layer or a stack). Glue kinds are our registered modules (layernorm, linear,
flatten, silu, maxpool2d, avgpool2d, global_avg_pool, affine) with `options` as
their arguments and their weights under `prefix`. Every tensor must be used
unless its key starts with an `ignore` prefix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats._checkpoint import Checkpoint
from metacluster.formats._registry import (
    HANDLERS,
    FormatHandler,
    build_bounded,
    register,
)
from metacluster.kan import MODULE_TYPES, KANLayer, KANModel, build_module

KAN_KINDS = (
    "efficient-kan",
    "fastkan",
    "chebykan",
    "fourierkan",
    "torch-conv-kan",
    "flashkan",
    "inkan",
    "kat",
    "convkan",
    "rkan",
    "kaconv",
)


def _entry_list(spec: dict[str, Any]) -> list[dict[str, Any]]:
    entries = spec.get("layers")
    if not isinstance(entries, list) or not entries:
        raise FormatError("a model spec needs a non-empty 'layers' list")
    for pos, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise FormatError(f"spec layer {pos} must be an object with a 'kind'")
        if not isinstance(entry.get("options", {}), dict):
            raise FormatError(f"spec layer {pos}: 'options' must be an object")
        if not isinstance(entry.get("prefix", ""), str):
            raise FormatError(f"spec layer {pos}: 'prefix' must be a string")
    return entries


def _under(ckpt: Checkpoint, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}


def _glue(
    kind: str, pos: int, prefix: str, options: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> nn.Module:
    local = {k[len(prefix) :]: v for k, v in tensors.items()}
    args = dict(options)
    # Shapes the weights already tell need not be repeated in the spec.
    if kind == "layernorm" and "weight" in local:
        args.setdefault("normalized_shape", int(local["weight"].shape[0]))
    if kind == "affine" and "scale" in local:
        args.setdefault("features", int(local["scale"].shape[0]))
    if kind == "linear" and "weight" in local:
        args.setdefault("out_features", int(local["weight"].shape[0]))
        args.setdefault("in_features", int(local["weight"].shape[1]))
        args.setdefault("bias", "bias" in local)
    try:
        # Options come from the spec file: a dry build must fit the tensors under the
        # prefix (or hold nothing to speak of) before the module is built for real.
        module = build_bounded(
            lambda: build_module({"type": kind, **args}),
            f"spec layer {pos} ({kind})",
            expect=local or None,
        )
    except (TypeError, ValueError) as exc:
        raise FormatError(f"spec layer {pos} ({kind}): {exc}") from exc
    if local:
        try:
            module.load_state_dict(local, strict=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).split())[:300]
            raise FormatError(
                f"spec layer {pos} ({kind}) weights under {prefix!r} do not fit: {first}"
            ) from exc
    elif any(True for _ in module.parameters()):
        raise FormatError(f"spec layer {pos} ({kind}) has no tensors under prefix {prefix!r}")
    return module


class SpecFormat(FormatHandler):
    name = "spec"

    def matches(self, ckpt: Checkpoint) -> bool:
        return ckpt.spec is not None

    def load(self, ckpt: Checkpoint) -> KANModel:
        spec = ckpt.spec or {}
        entries = _entry_list(spec)
        ignore = [str(p) for p in spec.get("ignore", [])]
        used: set[str] = set()
        modules: list[nn.Module] = []
        for pos, entry in enumerate(entries):
            kind, prefix = entry["kind"], entry.get("prefix", "")
            options = dict(entry.get("options", {}))
            tensors = _under(ckpt, prefix) if prefix or kind in KAN_KINDS else {}
            tensors = {k: v for k, v in tensors.items() if k not in used}
            if kind in KAN_KINDS:
                if not tensors:
                    raise FormatError(
                        f"spec layer {pos} ({kind}): no tensors under prefix {prefix!r}"
                    )
                sub = Checkpoint(
                    path=ckpt.path,
                    files=[],
                    tensors=tensors,
                    hf_config=options if kind in ("torch-conv-kan", "convkan", "kaconv") else None,
                    ordered=ckpt.ordered,
                    options=options,
                )
                modules.extend(HANDLERS[kind].load(sub).layers)
            elif kind in MODULE_TYPES and not issubclass(MODULE_TYPES[kind], KANLayer):
                modules.append(_glue(kind, pos, prefix, options, tensors))
            else:
                glue = [k for k, cls in MODULE_TYPES.items() if not issubclass(cls, KANLayer)]
                known = ", ".join([*KAN_KINDS, *sorted(glue)])
                raise FormatError(f"spec layer {pos}: unknown kind {kind!r}; known: {known}")
            used.update(tensors)
        left = [
            k for k in ckpt.tensors if k not in used and not any(k.startswith(p) for p in ignore)
        ]
        if left:
            shown = ", ".join(left[:8]) + (" ..." if len(left) > 8 else "")
            raise FormatError(
                f"spec leaves tensors unused ({shown}); add layers or 'ignore' prefixes"
            )
        model = KANModel(modules, meta={"format": self.name})
        model.meta["family"] = model.family
        return model

    def count_params(self, ckpt: Checkpoint, model: KANModel) -> int:
        ignore = tuple(str(p) for p in (ckpt.spec or {}).get("ignore", []))
        return sum(
            int(t.numel())
            for key, t in ckpt.tensors.items()
            if t.is_floating_point()
            and not key.startswith(ignore or ("\0",))
            and key.rsplit(".", 1)[-1] not in ("grid", "arange", "mask")
        )


_: FormatHandler = register(SpecFormat())
