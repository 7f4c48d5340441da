"""pykan import/export with the REAL pykan library (saveckpt / loadckpt), plus 0.0.x.

Checkpoints: plain, after fit with grid updates (non-uniform per-input knots),
after refine() with numpy-tagged YAML, float64; a hand-built legacy state dict.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from formats_helpers import assert_same_outputs, inputs, max_diff
from reference import pykan_legacy
from reference.efficient_kan import KAN

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import detect_format, export_model, inspect_model, load_model
from metacluster.kan import PyKANLayer, build_kan

kan = pytest.importorskip("kan")


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _make(tmp_path: Path, width: list[Any], **kw: Any) -> Any:
    return _quiet(kan.KAN, width=width, seed=0, auto_save=False, ckpt_path=str(tmp_path), **kw)


def _dataset(n_var: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, n_var, generator=gen) * 2 - 1
    y = torch.sin(3 * x[:, :1]) + x[:, 1:2] ** 2
    return {"train_input": x, "train_label": y, "test_input": x[:8], "test_label": y[:8]}


def _pykan_out(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)  # type: ignore[no-any-return]


def test_plain_checkpoint_prefix_and_either_file(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 3, 1], grid=4, k=3)
    prefix = tmp_path / "plain"
    src.saveckpt(str(prefix))
    x = inputs(50, 2)
    for name in (prefix, tmp_path / "plain_config.yml", tmp_path / "plain_state"):
        assert detect_format(name) == "pykan"
        assert_same_outputs(lambda t: _pykan_out(src, t), load_model(name), x, fmt="pykan")


def test_after_fit_with_grid_updates(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 3, 1], grid=5, k=3)
    _quiet(src.fit, _dataset(), steps=3, update_grid=True, grid_update_num=2, opt="Adam", lr=0.05)
    grid = src.act_fun[0].grid.detach()
    assert not torch.allclose(grid[0], grid[1])  # per-input, non-uniform knots
    src.saveckpt(str(tmp_path / "fit"))
    model = load_model(tmp_path / "fit")
    x = inputs(80, 2, scale=1.5)
    assert_same_outputs(lambda t: _pykan_out(src, t), model, x, fmt="pykan")
    groups = next(model.kan_layers())[1].edge_view().groups
    assert int(groups.max()) == 1  # two distinct input grids -> two groups


def test_after_refine_with_numpy_yaml(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 3, 1], grid=3, k=3)
    _pykan_out(src, inputs(30, 2))
    for g in np.array([5, 7]):  # the tutorial's pattern: numpy ints end up in the YAML
        src = _quiet(src.refine, g)
    src.saveckpt(str(tmp_path / "ref"))
    assert "!!python/object/apply:numpy" in (tmp_path / "ref_config.yml").read_text()
    model = load_model(tmp_path / "ref")
    assert model.layers[0].grid_size == 7
    assert_same_outputs(lambda t: _pykan_out(src, t), model, inputs(60, 2), fmt="pykan")


def test_float64_is_preserved(tmp_path: Path) -> None:
    src = _make(tmp_path, [3, 2, 2], grid=5, k=2, base_fun="identity")
    src = src.to(torch.float64)
    with torch.no_grad():
        src.node_bias_0 += 0.3
        src.subnode_scale_1.mul_(1.5)
    src.saveckpt(str(tmp_path / "f64"))
    model = load_model(tmp_path / "f64")
    assert model.layers[0].coef.dtype == torch.float64
    x = inputs(40, 3, dtype=torch.float64)
    with torch.no_grad():
        # fp64 end to end: pykan's fp32-made knots are not uniform to fp64 precision, so
        # they take the exact Cox-de Boor path, and only rounding is left (measured 2e-16)
        assert max_diff(_pykan_out(src, x), model(x)) <= 1e-13


@pytest.mark.parametrize("base_fun", ["zero", "identity"])
def test_other_base_functions(tmp_path: Path, base_fun: str) -> None:
    src = _make(tmp_path, [2, 3, 2], grid=3, k=2, base_fun=base_fun)
    src.saveckpt(str(tmp_path / "b"))
    model = load_model(tmp_path / "b")
    assert model.layers[0].coef_dim == 3 + 2 + (base_fun != "zero")
    x = inputs(40, 2)
    assert_same_outputs(lambda t: _pykan_out(src, t), model, x, fmt="pykan")
    export_model(model, "pykan", tmp_path / "back")
    loaded = _quiet(kan.KAN.loadckpt, str(tmp_path / "back"))
    assert loaded.base_fun_name == base_fun
    assert_same_outputs(lambda t: _pykan_out(loaded, t), model, x, fmt="pykan")


def test_symbolic_edges_are_refused_by_name(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 2, 1], grid=3, k=3)
    _quiet(src.fix_symbolic, 0, 1, 0, "sin", fit_params_bool=False)
    src.saveckpt(str(tmp_path / "sym"))
    with pytest.raises(FormatError, match=r"symbolic edge.*layer 0, in 1, out 0"):
        load_model(tmp_path / "sym")


def test_multiplication_nodes_are_refused(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, [2, 1], 1], grid=3, k=3)
    src.saveckpt(str(tmp_path / "mult"))
    with pytest.raises(FormatError, match="multiplication nodes"):
        load_model(tmp_path / "mult")


def test_cache_data_is_never_read(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 2, 1], grid=3, k=3)
    _pykan_out(src, inputs(10, 2))
    src.saveckpt(str(tmp_path / "c"))
    (tmp_path / "c_cache_data").write_bytes(b"garbage that would fail to load")
    model = load_model(tmp_path / "c")
    assert_same_outputs(lambda t: _pykan_out(src, t), model, inputs(10, 2), fmt="pykan")


def test_export_loads_in_real_pykan(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_kan("pykan_bspline", [3, 4, 2])
    with torch.no_grad():
        for layer in model.layers:
            assert isinstance(layer, PyKANLayer)
            layer.node_bias.normal_()
            layer.subnode_scale.uniform_(0.5, 1.5)
            layer.set_grid(layer.grid * torch.linspace(0.8, 1.2, layer.in_features)[:, None])
    files = export_model(model, "pykan", tmp_path / "out")
    assert sorted(f.name for f in files) == ["out_cache_data", "out_config.yml", "out_state"]
    loaded = _quiet(kan.KAN.loadckpt, str(tmp_path / "out"))
    x = inputs(50, 3)
    assert_same_outputs(lambda t: _pykan_out(loaded, t), model.eval(), x, fmt="pykan")
    again = load_model(tmp_path / "out")
    assert_same_outputs(model, again, x, fmt="pykan")


def test_legacy_flat_layout(tmp_path: Path) -> None:
    state = pykan_legacy.make_state([3, 4, 2], grid=5, k=3)
    torch.save(state, tmp_path / "legacy.pt")
    assert detect_format(tmp_path / "legacy.pt") == "pykan"
    model = load_model(tmp_path / "legacy.pt")
    assert model.meta["layout"] == "pykan-0.0"
    x = inputs(60, 3)
    assert_same_outputs(lambda t: pykan_legacy.forward(state, t), model, x, fmt="pykan")


def test_legacy_per_edge_grids_that_differ_are_refused(tmp_path: Path) -> None:
    state = pykan_legacy.make_state([2, 2], grid=4, k=3)
    state["act_fun.0.grid"][3] *= 1.5  # row o*I+i = 1*2+1: input 1 of output 1 only
    torch.save(state, tmp_path / "legacy.pt")
    with pytest.raises(FormatError, match=r"input\(s\) \[1\]"):
        load_model(tmp_path / "legacy.pt")


def test_inspect_counts_config_and_state_only(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 3, 1], grid=4, k=3)
    _pykan_out(src, inputs(10, 2))
    src.saveckpt(str(tmp_path / "m"))
    info = inspect_model(tmp_path / "m")
    assert info["format"] == "pykan" and info["family"] == "bspline"
    assert [(ly["in"], ly["out"], ly["edges"], ly["coef_dim"]) for ly in info["layers"]] == [
        (2, 3, 6, 8),
        (3, 1, 3, 8),
    ]
    sd = src.state_dict()
    # pykan's learned tensors: everything but the knots and the masks
    expected = sum(v.numel() for k, v in sd.items() if not k.endswith((".grid", ".mask")))
    assert info["params"] == expected
    config_and_state = sum((tmp_path / f"m{s}").stat().st_size for s in ("_config.yml", "_state"))
    assert info["bytes"] == config_and_state
    assert info["bytes"] < config_and_state + (tmp_path / "m_cache_data").stat().st_size


def test_cross_export_between_efficient_kan_and_pykan(tmp_path: Path) -> None:
    torch.manual_seed(6)
    ref = KAN([3, 4, 2])
    torch.save(ref.state_dict(), tmp_path / "eff.pt")
    x = inputs(50, 3)
    # efficient-kan -> pykan: real pykan reproduces efficient-kan's outputs
    export_model(load_model(tmp_path / "eff.pt"), "pykan", tmp_path / "as_pykan")
    loaded = _quiet(kan.KAN.loadckpt, str(tmp_path / "as_pykan"))
    assert_same_outputs(ref, lambda t: _pykan_out(loaded, t), x, fmt="pykan")
    # pykan (identity node affines) -> efficient-kan
    src = _make(tmp_path, [3, 4, 2], grid=5, k=3)
    src.saveckpt(str(tmp_path / "pk"))
    export_model(load_model(tmp_path / "pk"), "efficient-kan", tmp_path / "as_eff.pt")
    eff = KAN([3, 4, 2])
    eff.load_state_dict(torch.load(tmp_path / "as_eff.pt", weights_only=True), strict=True)
    assert_same_outputs(lambda t: _pykan_out(src, t), eff, x, fmt="pykan")


def test_pykan_node_affines_cannot_go_to_efficient_kan(tmp_path: Path) -> None:
    model = build_kan("pykan_bspline", [2, 2])
    layer = model.layers[0]
    assert isinstance(layer, PyKANLayer)
    with torch.no_grad():
        layer.node_bias.fill_(0.5)
    with pytest.raises(IncompatibleError, match="node/subnode"):
        export_model(model, "efficient-kan", tmp_path / "x.pt")


def test_state_file_alone_and_symbolic_branch_disabled(tmp_path: Path) -> None:
    src = _make(tmp_path, [2, 2, 1], grid=3, k=3)
    _quiet(src.fix_symbolic, 0, 0, 1, "x^2", fit_params_bool=False)
    src.symbolic_enabled = False  # the symbolic branch is then ignored by MultKAN.forward
    src.saveckpt(str(tmp_path / "off"))
    x = inputs(30, 2)
    assert_same_outputs(lambda t: _pykan_out(src, t), load_model(tmp_path / "off"), x, fmt="pykan")
    # the state dict alone (no YAML): detected by its keys, silu base assumed
    alone = tmp_path / "alone" / "weights.pt"
    alone.parent.mkdir()
    alone.write_bytes((tmp_path / "off_state").read_bytes())
    assert detect_format(alone) == "pykan"
    with pytest.raises(FormatError, match="symbolic edge"):
        load_model(alone)  # without the config the symbolic branch counts as enabled
