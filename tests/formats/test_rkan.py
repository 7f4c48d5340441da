"""rKAN (PyPI rkan 0.0.3, vendored verbatim under reference/rkan_upstream): Sequentials of
nn.Linear and JacobiRKAN / PadeRKAN written by rKAN's own classes, imported, exported back
with a strict load, a PadeRKAN pole refused at import, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs, max_diff
from rkan.torch import JacobiRKAN, PadeRKAN
from test_tck_polynomial import compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import (
    detect_format,
    export_model,
    load_model,
    source_checkpoint_bytes,
)


def _model(seed: int = 0, jacobi: int = 3, pade: tuple[int, int] = (3, 3)) -> nn.Sequential:
    """rKAN's README network (input linear, a JacobiRKAN and a PadeRKAN each feeding a
    linear), with trained-like activation parameters."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(6, 16), JacobiRKAN(jacobi), nn.Linear(16, 12), PadeRKAN(*pade), nn.Linear(12, 4)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("1.", "3.")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _pade_only(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 16), PadeRKAN(3, 3), nn.Linear(16, 10)).eval()


def _inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(64, 6, generator=torch.Generator().manual_seed(seed)) * 2


def _save(tmp_path: Path, model: nn.Module, config: dict[str, object] | None) -> Path:
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("degree", [1, 3, 6])
def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path, degree: int) -> None:
    pade = (min(degree + 1, 6), 3)
    ref = _model(jacobi=degree, pade=pade)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    path = _save(tmp_path, ref, {"degree": degree})
    assert detect_format(path) == "rkan"
    model = load_model(path)
    assert [type(m).__name__ for m in model.layers] == [
        "Linear",
        "JacobiRKANLayer",
        "PadeRKANLayer",
    ]
    assert model.layers[1].n_edges == 12 * 16 and model.layers[1].coef_dim == 1
    assert model.meta["family"] == "rkan_jacobi+rkan_pade"
    x = _inputs()
    diff = assert_same_outputs(ref, model, x, fmt="rkan")
    with torch.no_grad():  # relative to the output scale
        assert diff / float(ref(x).abs().max()) < 1e-6
    files = export_model(model, "rkan", tmp_path / "out.pt")
    assert [f.name for f in files] == ["out.pt", "out.pt.spec.json"]
    assert_same_outputs(ref, load_model(files[0]), x, fmt="rkan")  # reads back via its spec
    back = torch.load(files[0], weights_only=True)
    assert list(back) == list(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _model(seed=5, jacobi=degree, pade=pade), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt="rkan")


def test_jacobi_degree_comes_from_a_spec_for_a_plain_file(tmp_path: Path) -> None:
    ref = _model()
    torch.save(ref.state_dict(), tmp_path / "m.pt")
    with pytest.raises(FormatError, match=r"JacobiRKAN keeps its degree out of the state dict"):
        load_model(tmp_path / "m.pt")
    spec = {"layers": [{"kind": "rkan", "options": {"degrees": [3]}}]}
    model = load_model(tmp_path / "m.pt", spec=spec)
    assert_same_outputs(ref, model, _inputs(), fmt="rkan")
    # a wrong declared degree gives other outputs: the degree really is read
    wrong = load_model(
        tmp_path / "m.pt", spec={"layers": [{"kind": "rkan", "options": {"degree": 2}}]}
    )
    with torch.no_grad():
        assert max_diff(ref(_inputs()), wrong(_inputs())) > 1e-2


def test_shapes_that_disagree_with_the_declared_degrees_are_refused(tmp_path: Path) -> None:
    ref = _model()
    with pytest.raises(
        FormatError, match=r"3\.w_q has 3 coefficient\(s\) but the config declares degree_q = 5"
    ):
        load_model(_save(tmp_path, ref, {"degree": 3, "degree_q": 5}))
    state = dict(ref.state_dict())
    state["1.iota"] = torch.ones(2)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(FormatError, match=r"1\.iota has shape \(2,\), expected \(1,\)"):
        load_model(tmp_path)
    state = dict(ref.state_dict())
    state["3.w_p"] = torch.ones(7)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(
        FormatError, match=r"3\.w_p has 7 coefficient\(s\); PadeRKAN runs with 2\.\.6"
    ):
        load_model(tmp_path)
    with pytest.raises(FormatError, match=r"degrees lists 2 degree\(s\) for 1 JacobiRKAN"):
        load_model(_save(tmp_path, ref, {"degrees": [3, 3]}))


def test_an_activation_without_its_linear_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), PadeRKAN(2, 3))
    with pytest.raises(FormatError, match=r"activation 1 is not followed by a linear layer"):
        load_model(_save(tmp_path, model, None))


def test_a_pade_pole_in_the_data_range_is_refused_at_import(tmp_path: Path) -> None:
    ref = _model()
    with torch.no_grad():  # Q(s) = s - 0.5 (w_q[2:] = 0): zero at sigmoid(x) = 0.5, x = 0
        ref[3].w_q.copy_(torch.tensor([-0.5, 1.0, 0.0]))
    path = _save(tmp_path, ref, {"degree": 3})
    with pytest.raises(
        FormatError, match=r"3\.w_q: the PadeRKAN denominator is 0 at x = -?0\.001, inside"
    ):
        load_model(path)
    # what upstream would do there: inf/NaN at the pole
    with torch.no_grad():
        assert not torch.isfinite(ref[3](torch.zeros(1))).all()
    # outside the declared data range it is allowed
    (tmp_path / "config.json").write_text(json.dumps({"degree": 3, "input_range": [0.5, 9]}))
    load_model(path)


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    compress_and_reload(tmp_path, _pade_only, None, "rkan")


def test_source_bytes_are_measured_on_the_rkan_export(tmp_path: Path) -> None:
    model = load_model(_save(tmp_path, _model(), {"degree": 3}))
    size, how = source_checkpoint_bytes(model)
    assert how == "export:rkan"
    assert size > (tmp_path / "pytorch_model.bin").stat().st_size * 0.9
