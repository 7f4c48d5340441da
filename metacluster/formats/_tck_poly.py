"""torch-conv-kan's polynomial layers, read and written for the torch-conv-kan format.

Dense (`kans/layers.py`), per layer prefix p:
- GRAMLayer: `grams_basis_weights` (I, O, D+1), `beta_weights` (D+1,), `base_weights` (O, I);
- JacobiKANLayer: `jacobi_coeffs` (I, O, D+1), `base_weights`; (a, b) from config, default 1, 1;
- BernsteinKANLayer: `bernstein_coeffs` (I, O, D+1), `base_weights`;
- KALNLayer: `poly_weight` (O, I*(D+1)) (column i*(D+1) + d), `base_weight` (O, I);
each with its LayerNorm (`norm.*`, KALN: `layer_norm.*`) and a SiLU after it.

Conv (`kan_convs/ka?n_conv.py`): `poly_weights` (g, O/g, (I/g)(D+1), kh, kw) and
`base_conv.{g}.weight` (O/g, I/g, kh, kw), Gram adding `beta_weights`; channel d*(I/g) + i
(KAGN, KALN, KAJN) or i*(D+1) + d (KABN); InstanceNorm (no tensors), then SiLU. KALN,
KAJN and KABN write the same tensors: config.json (or a spec's options) names the class
with "layer_class"; a checkpoint with `beta_weights` is KAGN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import _tck_conv
from metacluster.formats._registry import KeyTracker, float_dtype, layernorm_from
from metacluster.kan import KANLayer, SiLU
from metacluster.kan.polynomial import POLY_CONVS, POLY_LAYERS, _PolyKANConv2d, _PolyKANLayer

# Upstream class -> our polynomial kind.
CONV_CLASSES = {
    "KAGNConv2DLayer": "gram",
    "KALNConv2DLayer": "legendre",
    "KAJNConv2DLayer": "jacobi",
    "KABNConv2DLayer": "bernstein",
}
DENSE_CLASSES = {
    "GRAMLayer": "gram",
    "KALNLayer": "legendre",
    "JacobiKANLayer": "jacobi",
    "BernsteinKANLayer": "bernstein",
}
# Dense kind -> (coefficient leaf, base leaf, norm prefix); KALN is (O, I*(D+1)).
DENSE_KEYS = {
    "gram": ("grams_basis_weights", "base_weights", "norm."),
    "jacobi": ("jacobi_coeffs", "base_weights", "norm."),
    "bernstein": ("bernstein_coeffs", "base_weights", "norm."),
    "legendre": ("poly_weight", "base_weight", "layer_norm."),
}
# Which prefix leaf marks each variant (the torch-conv-kan handler's detection).
MARKERS = {
    "dense_gram": "grams_basis_weights",
    "dense_jacobi": "jacobi_coeffs",
    "dense_bernstein": "bernstein_coeffs",
    "dense_legendre": "poly_weight",
    "poly_conv": "poly_weights",
}
# The dense layouts, for naming the closest format of an unknown checkpoint.
DENSE_LAYOUTS = tuple(
    ((coef, 2 if kind == "legendre" else 3), (base, 2), (norm + "weight", 1))
    for kind, (coef, base, norm) in DENSE_KEYS.items()
)


def declared(opts: dict[str, Any], name: str, actual: int, where: str) -> None:
    """A declared degree / group count must be what the tensor shapes say."""
    value = opts.get(name)
    if value is not None and value != actual:
        raise FormatError(f"{where} says {name} {actual}, but the config declares {value}")


def _jacobi_ab(opts: dict[str, Any], p: str) -> tuple[float, float]:
    a, b = opts.get("a", 1.0), opts.get("b", 1.0)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
        raise FormatError(f"config.json ({p}): a and b must be numbers")
    if not (float(a) > -1 and float(b) > -1):
        raise FormatError(f"config.json ({p}): Jacobi needs a, b > -1, got {a}, {b}")
    return float(a), float(b)


def _kind_of(opts: dict[str, Any], classes: dict[str, str], p: str, default: str | None) -> str:
    name = opts.get("layer_class")
    if name is None:
        if default is None:
            raise FormatError(
                f"{p}poly_weights: KALNConv2DLayer, KAJNConv2DLayer and KABNConv2DLayer "
                'write the same tensors; name the class in config.json ("layer_class") '
                "or in the spec's options"
            )
        return default
    if name not in classes:
        raise FormatError(f"{p}: layer_class {name!r} is not one of {sorted(classes)}")
    return classes[name]


def _basis_params(
    keys: KeyTracker, p: str, kind: str, opts: dict[str, Any], n_poly: int, leaf: str
) -> tuple[Tensor | None, tuple[float, float]]:
    """Gram's beta_weights and Jacobi's (a, b), once the degree the coefficient tensor
    `leaf` shows is checked against the config's and beta's."""
    declared(opts, "degree", n_poly - 1, f"{p}{leaf}")
    beta = keys.get(p + "beta_weights", 1) if kind == "gram" else None
    if beta is not None and beta.shape[0] != n_poly:
        raise FormatError(
            f"{p}beta_weights has {beta.shape[0]} values, but {p}{leaf} has degree "
            f"{n_poly - 1} ({n_poly} needed)"
        )
    return beta, _jacobi_ab(opts, p) if kind == "jacobi" else (1.0, 1.0)


def _set_beta(layer: KANLayer, beta: Tensor | None) -> None:
    if beta is not None:
        with torch.no_grad():
            getattr(layer, "beta").copy_(beta)  # noqa: B009  (typed on the subclass only)


def load_dense(keys: KeyTracker, p: str, kind: str, opts: dict[str, Any]) -> list[nn.Module]:
    """[layer, LayerNorm, SiLU] of one dense torch-conv-kan polynomial layer."""
    coef_leaf, base_leaf, norm = DENSE_KEYS[kind]
    base = keys.get(p + base_leaf, 2)  # (O, I)
    n_out, n_in = base.shape
    coef = keys.get(p + coef_leaf, 2 if kind == "legendre" else 3)
    if kind == "legendre":  # (O, I*(D+1)), column i*(D+1) + d
        n_poly, rem = divmod(int(coef.shape[1]), int(n_in))
        if coef.shape[0] != n_out or rem or n_poly < 1:
            raise FormatError(
                f"{p}{coef_leaf} has shape {tuple(coef.shape)}, which does not fit "
                f"{p}{base_leaf} {tuple(base.shape)} (expected ({n_out}, {n_in}*(degree+1)))"
            )
        edges = coef.reshape(n_out, n_in, n_poly)
    else:  # (I, O, D+1)
        if tuple(coef.shape[:2]) != (n_in, n_out):
            raise FormatError(
                f"{p}{coef_leaf} has shape {tuple(coef.shape)}, expected ({n_in}, {n_out}, "
                f"degree+1) from {p}{base_leaf}"
            )
        n_poly = int(coef.shape[2])
        edges = coef.transpose(0, 1)
    beta, (a, b) = _basis_params(keys, p, kind, opts, n_poly, coef_leaf)
    layer = POLY_LAYERS[kind](int(n_in), int(n_out), degree=n_poly - 1, a=a, b=b)
    layer.to(float_dtype(coef, base))
    layer.set_edge_coefficients(torch.cat([edges, base.unsqueeze(-1)], -1).reshape(-1, n_poly + 1))
    _set_beta(layer, beta)
    weight, bias = keys.get(p + norm + "weight", 1), keys.get(p + norm + "bias", 1)
    if weight.shape[0] != n_out or bias.shape[0] != n_out:
        raise FormatError(f"{p}{norm}weight does not have the layer's {n_out} outputs")
    return [layer, layernorm_from(weight, bias), SiLU()]


def load_conv(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    """[layer, SiLU] of one torch-conv-kan polynomial conv layer."""
    has_beta = p + "beta_weights" in keys.ckpt.tensors
    kind = _kind_of(opts, CONV_CLASSES, p, "gram" if has_beta else None)
    if has_beta != (kind == "gram"):
        raise FormatError(f"{p}: beta_weights belongs to KAGNConv2DLayer only, not {kind}")
    poly = keys.get(p + "poly_weights", 5)  # (g, O/g, (I/g)(D+1), kh, kw)
    groups = int(poly.shape[0])
    bases = [keys.get(f"{p}base_conv.{g}.weight", 4) for g in range(groups)]
    if f"{p}base_conv.{groups}.weight" in keys.ckpt.tensors:
        raise FormatError(f"{p}poly_weights has {groups} groups, but base_conv has more")
    out_g, in_g, kh, kw = bases[0].shape
    n_poly, rem = divmod(int(poly.shape[2]), int(in_g))
    if (
        rem
        or n_poly < 1
        or tuple(poly.shape[3:]) != (kh, kw)
        or poly.shape[1] != out_g
        or any(w.shape != bases[0].shape for w in bases)
    ):
        raise FormatError(
            f"{p}poly_weights has shape {tuple(poly.shape)}, which does not fit "
            f"{p}base_conv.0.weight {tuple(bases[0].shape)} over {groups} groups"
        )
    declared(opts, "groups", groups, f"{p}poly_weights")
    beta, (a, b) = _basis_params(keys, p, kind, opts, n_poly, "poly_weights")
    layer = POLY_CONVS[kind](
        int(in_g) * groups,
        int(out_g) * groups,
        (int(kh), int(kw)),
        degree=n_poly - 1,
        a=a,
        b=b,
        dropout=float(opts["dropout"]),
        **_tck_conv.geometry(opts, groups),
    )
    layer.to(float_dtype(poly, *bases))
    if kind == "bernstein":  # channel i*(D+1) + d
        blocks = poly.reshape(groups * out_g, in_g, n_poly, kh, kw)
    else:  # channel d*(I/g) + i
        blocks = poly.reshape(groups * out_g, n_poly, in_g, kh, kw).transpose(1, 2)
    coef = torch.cat([blocks, torch.cat(bases).unsqueeze(2)], dim=2).permute(0, 1, 3, 4, 2)
    layer.set_edge_coefficients(coef.reshape(-1, n_poly + 1))
    _set_beta(layer, beta)
    return [layer, SiLU()]


def _expect(modules: list[nn.Module], pos: int, types: tuple[type[nn.Module], ...]) -> None:
    follow = modules[pos + 1 : pos + 1 + len(types)]
    if len(follow) != len(types) or not all(
        isinstance(m, t) for m, t in zip(follow, types, strict=True)
    ):
        names = " and ".join(t.__name__ for t in types)
        raise IncompatibleError(
            f"layer {pos}: a torch-conv-kan polynomial layer is followed by {names}"
        )


def export_dense(
    modules: list[nn.Module], pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    """Write modules[pos] (and its LayerNorm) under `prefix`; returns its config entry."""
    layer = modules[pos]
    assert isinstance(layer, _PolyKANLayer)
    _expect(modules, pos, (nn.LayerNorm, SiLU))
    norm = modules[pos + 1]
    assert isinstance(norm, nn.LayerNorm)
    if layer.base_activation != "silu":
        raise IncompatibleError(f"layer {pos}: torch-conv-kan's dense layers have a SiLU base")
    coef_leaf, base_leaf, norm_prefix = DENSE_KEYS[layer.kind]
    coef = layer.coef.detach()
    if layer.kind == "legendre":
        state[prefix + coef_leaf] = coef[..., :-1].reshape(layer.out_features, -1).clone()
    else:
        state[prefix + coef_leaf] = coef[..., :-1].transpose(0, 1).contiguous()
    state[prefix + base_leaf] = coef[..., -1].clone()
    if layer.beta is not None:
        state[prefix + "beta_weights"] = layer.beta.detach().clone()
    state[prefix + norm_prefix + "weight"] = norm.weight.detach().clone()
    state[prefix + norm_prefix + "bias"] = norm.bias.detach().clone()
    name = next(k for k, v in DENSE_CLASSES.items() if v == layer.kind)
    return {
        "layer_class": name,
        "input_dim": layer.in_features,
        "output_dim": layer.out_features,
        **layer.poly_config(),
    }


def export_conv(
    modules: list[nn.Module], pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    """Write the conv layer modules[pos] under `prefix`; returns its config entry."""
    layer = modules[pos]
    assert isinstance(layer, _PolyKANConv2d)
    _expect(modules, pos, (SiLU,))
    default_base = "silu" if layer.kind == "gram" else "identity"
    if layer.norm != "instance" or layer.base_activation != default_base:
        raise IncompatibleError(
            f"layer {pos}: torch-conv-kan's {layer.kind} conv has instance norm and a "
            f"{default_base} base"
        )
    g, n_poly = layer.groups, layer.degree + 1
    out_g, in_g = layer.out_channels // g, layer.in_channels // g
    kh, kw = layer.kernel_size
    coef = layer.coef.detach().permute(0, 1, 4, 2, 3)  # (O, I/g, L, kh, kw)
    poly = coef[:, :, :-1]
    if layer.kind != "bernstein":
        poly = poly.transpose(1, 2)  # channel d*(I/g) + i
    state[prefix + "poly_weights"] = poly.reshape(g, out_g, in_g * n_poly, kh, kw).contiguous()
    for gi, block in enumerate(_tck_conv.group_blocks(layer)):
        state[f"{prefix}base_conv.{gi}.weight"] = block[:, :, -1].clone()
    if layer.beta is not None:
        state[prefix + "beta_weights"] = layer.beta.detach().clone()
    name = next(k for k, v in CONV_CLASSES.items() if v == layer.kind)
    return _tck_conv.entry_from_config(layer, name, ("norm", "base_activation"))
