"""torch-conv-kan's polynomial layers (Gram, Legendre, Jacobi, Bernstein; dense and conv),
written by the upstream classes themselves (vendored verbatim in
reference/torch_conv_kan_upstream), imported, exported back and compressed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from formats_helpers import assert_same_outputs
from kan_convs.kabn_conv import KABNConv2DLayer
from kan_convs.kagn_conv import KAGNConv2DLayer
from kan_convs.kajn_conv import KAJNConv2DLayer
from kan_convs.kaln_conv import KALNConv2DLayer
from kans.layers import BernsteinKANLayer, GRAMLayer, JacobiKANLayer, KALNLayer
from safetensors.torch import load_file, save_file
from torch import nn

from metacluster.artifact import load_artifact, write_artifact
from metacluster.compress import MetaClusterConfig, compress
from metacluster.data import load_dataset
from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, inspect_model, load_model

FMT = "torch-conv-kan"


class Stack(nn.Module):
    """What torch-conv-kan's KAGN / KALN / ... models hold: `layers.{i}` (no dropout)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _perturbed(module: nn.Module, seed: int) -> nn.Module:
    """Trained-like weights: upstream initialises some tensors to zero or one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:  # not FastKANConv's fixed rbf.grid
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return module.eval()


DENSE: dict[str, Callable[[int, int, int], nn.Module]] = {
    "gram": lambda i, o, d: GRAMLayer(i, o, degree=d),
    "legendre": lambda i, o, d: KALNLayer(i, o, degree=d),
    "jacobi": lambda i, o, d: JacobiKANLayer(i, o, d, a=1.5, b=0.5),
    "bernstein": lambda i, o, d: BernsteinKANLayer(i, o, d),
}
# Upstream's defaults (Jacobi a = b = 1): what a state dict without a config.json means.
PLAIN: dict[str, type[nn.Module]] = {
    "gram": GRAMLayer,
    "legendre": KALNLayer,
    "jacobi": JacobiKANLayer,
    "bernstein": BernsteinKANLayer,
}
CONV: dict[str, type[nn.Module]] = {
    "gram": KAGNConv2DLayer,
    "legendre": KALNConv2DLayer,
    "jacobi": KAJNConv2DLayer,
    "bernstein": KABNConv2DLayer,
}


def _dense_stack(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _perturbed(Stack([DENSE[kind](5, 4, 3), DENSE[kind](4, 3, 2)]), seed)


def _conv_stack(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cls = CONV[kind]
    layers = [cls(4, 6, 3, degree=3, groups=2, padding=1), cls(6, 4, 3, degree=2)]
    return _perturbed(Stack(layers), seed)


def _conv_config(kind: str) -> dict[str, Any]:
    return {"layer_class": CONV[kind].__name__, "layers": [{"padding": 1}, {}]}


def fresh_outputs(build: Callable[[], nn.Module], state: dict[str, torch.Tensor], x: Any) -> Any:
    """A new upstream model (its lru_caches are per instance) loaded strictly."""
    fresh = build().eval()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        return fresh(x)


@pytest.mark.parametrize("kind", sorted(DENSE))
def test_dense_upstream_checkpoint_loads_and_exports_back(tmp_path: Path, kind: str) -> None:
    ref = _dense_stack(kind)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    if kind == "jacobi":  # (a, b) are not in the state dict
        (tmp_path / "config.json").write_text(json.dumps({"a": 1.5, "b": 0.5}))
    assert detect_format(tmp_path) == FMT
    model = load_model(tmp_path)
    assert model.meta["family"] == kind
    assert [type(m).__name__ for m in model.layers][1:3] == ["LayerNorm", "SiLU"]
    assert model.layers[0].coef_dim == 3 + 2 and model.layers[0].n_edges == 20
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(ref, model, x, fmt=FMT)
    written = export_model(model, FMT, tmp_path / "out" / "kan.pt")
    back = torch.load(written[0], weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _dense_stack(kind, seed=9), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)


@pytest.mark.parametrize("kind", sorted(CONV))
def test_conv_upstream_checkpoint_loads_and_exports_back(tmp_path: Path, kind: str) -> None:
    ref = _conv_stack(kind)
    state = {k: v.clone().contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(_conv_config(kind)))
    model = load_model(tmp_path)
    assert [type(m).__name__ for m in model.layers][1] == "SiLU"
    layer = model.layers[0]
    assert layer.n_edges == 6 * 2 * 3 * 3 and layer.coef_dim == 3 + 2
    x = torch.randn(3, 4, 7, 7, generator=torch.Generator().manual_seed(2))
    assert_same_outputs(ref, model, x, fmt=FMT)
    written = export_model(model, FMT, tmp_path / "out" / "model.safetensors")
    back = load_file(str(written[0]))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _conv_stack(kind, seed=9), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt=FMT)
    # the written config.json names the class, so the export reads back on its own
    assert_same_outputs(ref, load_model(tmp_path / "out"), x, fmt=FMT)
    info = inspect_model(tmp_path / "out" / "model.safetensors")
    assert info["params"] == sum(p.numel() for p in ref.parameters())


def test_same_tensors_of_kaln_kajn_kabn_need_the_class_named(tmp_path: Path) -> None:
    torch.save(_conv_stack("legendre").state_dict(), tmp_path / "conv.pt")
    with pytest.raises(FormatError, match=r"layers\.0\.poly_weights.*layer_class"):
        load_model(tmp_path / "conv.pt")


def test_gram_conv_is_told_by_its_beta(tmp_path: Path) -> None:
    torch.save(_conv_stack("gram").state_dict(), tmp_path / "conv.pt")
    (tmp_path / "conv.pt.spec.json").write_text(
        json.dumps({"layers": [{"kind": FMT, "options": {"layers": [{"padding": 1}, {}]}}]})
    )
    model = load_model(tmp_path / "conv.pt")
    assert type(model.layers[0]).__name__ == "GramKANConv2d"
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    assert_same_outputs(_conv_stack("gram"), model, x, fmt=FMT)


class Wrapper(nn.Module):
    """A user's own network: a KALN conv body, pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = KALNConv2DLayer(2, 4, 3, degree=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.body(x)).flatten(1))


def test_spec_covers_a_wrapper(tmp_path: Path) -> None:
    torch.manual_seed(4)
    ref = _perturbed(Wrapper(), 4)
    torch.save(ref.state_dict(), tmp_path / "net.pt")
    spec = {
        "layers": [
            {
                "kind": FMT,
                "prefix": "body.",
                "options": {"layer_class": "KALNConv2DLayer", "padding": 1},
            },
            {"kind": "global_avg_pool"},
            {"kind": "linear", "prefix": "head."},
        ]
    }
    model = load_model(tmp_path / "net.pt", spec=spec)
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(5))
    assert_same_outputs(ref, model, x, fmt=FMT)


def _write(tmp_path: Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("change", "config", "message"),
    [
        (None, {"degree": 4}, r"layers\.0\.grams_basis_weights says degree 3.*declares 4"),
        ("beta", {}, r"layers\.0\.beta_weights has 2 values.*degree 3"),
        ("coef", {}, r"layers\.0\.grams_basis_weights has shape \(5, 3, 4\)"),
    ],
)
def test_dense_shapes_that_disagree_are_refused(
    tmp_path: Path, change: str | None, config: dict[str, Any], message: str
) -> None:
    state = dict(_dense_stack("gram").state_dict())
    if change == "beta":
        state["layers.0.beta_weights"] = state["layers.0.beta_weights"][:2]
    if change == "coef":
        state["layers.0.grams_basis_weights"] = state["layers.0.grams_basis_weights"][:, :3]
    with pytest.raises(FormatError, match=message):
        load_model(_write(tmp_path, state, config))


@pytest.mark.parametrize(
    ("change", "config", "message"),
    [
        (
            None,
            {"layers": [{"groups": 1}, {}]},
            r"layers\.0\.poly_weights says groups 2.*declares 1",
        ),
        (None, {"layers": [{"degree": 2}, {}]}, r"layers\.0\.poly_weights says degree 3"),
        ("poly", {}, r"layers\.1\.poly_weights has shape \(1, 4, 17, 3, 3\)"),
        ("base", {}, r"layers\.0\.poly_weights has 2 groups, but base_conv has more"),
    ],
)
def test_conv_shapes_that_disagree_are_refused(
    tmp_path: Path, change: str | None, config: dict[str, Any], message: str
) -> None:
    state = dict(_conv_stack("jacobi").state_dict())
    if change == "poly":
        state["layers.1.poly_weights"] = state["layers.1.poly_weights"][:, :, :17]
    if change == "base":
        state["layers.0.base_conv.2.weight"] = state["layers.0.base_conv.1.weight"]
    with pytest.raises(FormatError, match=message):
        load_model(_write(tmp_path, state, {"layer_class": "KAJNConv2DLayer", **config}))


@pytest.mark.parametrize("kind", [*sorted(DENSE), "conv_legendre"])
def test_compresses_through_the_engine_and_exports_back(tmp_path: Path, kind: str) -> None:
    if kind == "conv_legendre":
        spec = {
            "layers": [
                {"kind": "reshape", "options": {"shape": [1, 8, 8]}},
                {
                    "kind": FMT,
                    "prefix": "layers.0.",
                    "options": {"layer_class": "KALNConv2DLayer", "padding": 1},
                },
                {"kind": "flatten"},
                {"kind": "linear", "prefix": "layers.2."},
            ]
        }
        compress_and_reload(
            tmp_path,
            lambda: Stack(
                [KALNConv2DLayer(1, 4, 3, degree=2, padding=1), nn.Flatten(), nn.Linear(256, 10)]
            ),
            spec,
        )
    else:
        compress_and_reload(
            tmp_path, lambda: Stack([PLAIN[kind](64, 8, 3), PLAIN[kind](8, 10, 3)]), None
        )


def compress_and_reload(
    tmp_path: Path,
    build: Callable[[], nn.Module],
    spec: dict[str, Any] | None,
    fmt: str = FMT,
    tol: float = 1e-5,
) -> None:
    """An upstream-written model (`build`, then trained-like weights) is compressed on
    digits, saved as an artifact, reloaded with the same outputs, and (a plain stack)
    exported back into the upstream classes with the same outputs again."""
    torch.set_num_threads(1)
    digits = load_dataset("digits")
    torch.manual_seed(0)
    torch.save(_perturbed(build(), 0).state_dict(), tmp_path / "src.pt")
    model = load_model(tmp_path / "src.pt", spec=spec)
    config = MetaClusterConfig(
        method="metacluster",
        k=4,
        regress_steps=10,
        meta_epochs=1,
        soft_epochs=1,
        soft_min_steps=0,
        finetune_epochs=1,
        kmeans_iters=5,
        kmeans_restarts=1,
        device="cpu",
        baselines=False,
    )
    compressed, report = compress(model, config, digits)
    assert report.to_dict()["ratio"] > 1
    write_artifact(compressed, tmp_path / "m.mcz", report)
    loaded = load_artifact(tmp_path / "m.mcz")
    x = digits.x_test[:64]
    with torch.no_grad():
        assert float((loaded(x) - compressed(x)).abs().max()) <= 1e-5
    if spec is None:
        files = export_model(loaded, fmt, tmp_path / "back.pt")
        back = fresh_outputs(build, torch.load(files[0], weights_only=True), x)
        with torch.no_grad():
            assert float((back - loaded(x)).abs().max()) <= tol
