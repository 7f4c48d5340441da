"""The fused C kernel of the codebook runtime (metacluster/kan/native.py): the same
outputs as the torch kernels and the dense decompression on every shape it takes, its
AVX2 and scalar builds too, and a clean fallback to torch where it cannot be built."""

from __future__ import annotations

import platform
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from runtime_helpers import artifact
from torch import Tensor

from metacluster.artifact import load_artifact
from metacluster.kan import build_kan, native
from metacluster.kan.model import KANModel
from metacluster.runtime import CodebookKAN, CodebookLayer

RTOL = 1e-5
HAS_CC = shutil.which("cc") is not None or shutil.which("gcc") is not None
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")


@pytest.fixture(autouse=True)
def _fresh_kernel() -> Iterator[None]:
    """Each test decides afresh whether the kernel loads (env vars may change)."""
    native.reset()
    yield
    native.reset()


def _max_rel(a: Tensor, b: Tensor) -> float:
    scale = float(b.abs().max()) if b.numel() else 1.0
    return float((a - b).abs().max()) / max(scale, 1e-12) if a.numel() else 0.0


def _inputs(batch: int, width: int, seed: int = 3) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, width, generator=gen) * 1.5  # beyond the grids too


def _torch_path(fast: CodebookKAN, x: Tensor) -> Tensor:
    layers = [m for m in fast.layers if isinstance(m, CodebookLayer)]
    for m in layers:
        m.use_native = False
    try:
        with torch.no_grad():
            return fast(x)
    finally:
        for m in layers:
            m.use_native = True


MODELS = {
    # odd widths: 17 / 19 / 3 outputs = AVX-512 blocks of 16 plus scalar tails
    "bspline": lambda: build_kan("bspline", [33, 17, 19, 3]),
    "bspline_nobase_wide_grid": lambda: build_kan(
        "bspline", [9, 21], grid_size=7, grid_range=[-2.0, 3.0], base_activation="zero"
    ),
    "pykan": lambda: build_kan("pykan_bspline", [6, 5, 2]),
}


@needs_cc
@pytest.mark.parametrize("k", [3, 16, 32])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_kernel_equals_torch_and_dense(name: str, k: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model: KANModel = MODELS[name]()
    path = artifact(model, "vq", tmp_path / "m.mcz", k=k)
    dense = load_artifact(path).eval()
    fast = load_artifact(path, runtime="compressed")
    assert native.kernel() is not None
    layers = [m for m in fast.layers if isinstance(m, CodebookLayer)]
    assert layers and all(m.fused for m in layers)
    width = model.layers[0].in_features
    for batch in (0, 1, 2, 37):
        x = _inputs(batch, width)
        with torch.no_grad():
            want, got = dense(x), fast(x)
        slow = _torch_path(fast, x)
        assert got.shape == want.shape == slow.shape == (batch, want.shape[-1])
        assert _max_rel(got, want) <= RTOL, (batch, _max_rel(got, want))
        assert _max_rel(got, slow) <= RTOL


@needs_cc
def test_fused_kernel_nan_inf_and_leading_dims(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = artifact(build_kan("bspline", [5, 4]), "vq", tmp_path / "m.mcz", k=16)
    dense = load_artifact(path).eval()
    fast = load_artifact(path, runtime="compressed")
    x = _inputs(6, 5)
    x[1, 2] = float("nan")
    x[2, 0], x[3, 4] = float("inf"), 1e30  # far right of the knots: spline part zero
    x[4, 1] = -1e30
    with torch.no_grad():
        want, got = dense(x), fast(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want).any(1) & torch.isfinite(want).all(1)
    assert _max_rel(got[finite], want[finite]) <= RTOL
    x3 = _inputs(12, 5).reshape(3, 4, 5)  # leading dimensions are kept
    with torch.no_grad():
        assert _max_rel(fast(x3), dense(x3)) <= RTOL and fast(x3).shape == (3, 4, 4)


def test_layouts_without_the_fused_form_stay_on_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for layout in ("pq", "residual", "scalar"):
        path = artifact(build_kan("bspline", [6, 4]), layout, tmp_path / f"{layout}.mcz")
        fast = load_artifact(path, runtime="compressed")
        assert not any(m.fused for m in fast.layers if isinstance(m, CodebookLayer))
    order2 = build_kan("bspline", [6, 4], spline_order=2)
    fast = load_artifact(artifact(order2, "vq", tmp_path / "o2.mcz"), runtime="compressed")
    assert not fast.layers[0].fused


def _check_fallback(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = artifact(build_kan("bspline", [7, 5, 3]), "vq", tmp_path / "m.mcz", k=16)
    dense = load_artifact(path).eval()
    fast = load_artifact(path, runtime="compressed")
    assert native.kernel() is None
    for batch in (0, 1, 20):
        x = _inputs(batch, 7)
        with torch.no_grad():
            assert _max_rel(fast(x), dense(x)) <= RTOL


def test_switched_off_runs_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METACLUSTER_NATIVE", "0")
    _check_fallback(tmp_path)


def test_no_compiler_runs_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METACLUSTER_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert native.build() is None
    _check_fallback(tmp_path)


def test_failing_build_runs_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "cc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cc: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("METACLUSTER_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(fake))
    assert native.build() is None
    _check_fallback(tmp_path)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}


@needs_cc
@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 ISA levels")
@pytest.mark.parametrize("march", ["x86-64", "x86-64-v3"])
def test_avx2_and_scalar_builds_agree(
    march: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if march == "x86-64-v3" and not {"avx2", "fma", "bmi2"} <= _cpu_flags():
        pytest.skip("this CPU has no AVX2")
    monkeypatch.setenv("METACLUSTER_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("METACLUSTER_NATIVE_MARCH", march)
    torch.manual_seed(0)
    path = artifact(build_kan("bspline", [33, 17, 19]), "vq", tmp_path / "m.mcz", k=16)
    dense = load_artifact(path).eval()
    fast = load_artifact(path, runtime="compressed")
    assert native.kernel() is not None
    assert len(list((tmp_path / "cache").glob("mc_codebook_*.so"))) == 1
    for batch in (1, 9):
        x = _inputs(batch, 33)
        with torch.no_grad():
            assert _max_rel(fast(x), dense(x)) <= RTOL


def test_fused_layers_hold_codes_and_a_shared_grid_once(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = artifact(build_kan("bspline", [12, 6]), "vq", tmp_path / "m.mcz", k=16)
    fast = load_artifact(path, runtime="compressed")
    layer = fast.layers[0]
    assert isinstance(layer, CodebookLayer) and layer.fused
    grid = layer.layer.grid
    assert grid.shape == (12, 12) and grid.untyped_storage().nbytes() == 12 * 4
    codes = layer.codes_0
    assert codes.shape == (6, 12) and codes.untyped_storage().nbytes() == 6 * 12
    x = _inputs(4, 12)
    with torch.no_grad():
        assert _max_rel(fast(x), load_artifact(path).eval()(x)) <= RTOL


@needs_cc
def test_a_cast_runtime_leaves_the_float32_kernel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = artifact(build_kan("bspline", [5, 4]), "vq", tmp_path / "m.mcz", k=16)
    fast = load_artifact(path, runtime="compressed").double()
    dense = load_artifact(path).eval().double()
    x = _inputs(3, 5)
    with torch.no_grad():
        assert fast.layers[0].native_forward(x) is None
        assert _max_rel(fast(x.double()), dense(x.double())) <= RTOL


def test_cache_falls_back_to_the_temp_dir_when_home_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be: nothing can be made in it")
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("METACLUSTER_NATIVE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    assert native.cache_dir().parent == tmp_path / "tmp"
    monkeypatch.setenv("METACLUSTER_NATIVE_CACHE", str(tmp_path / "mine"))
    assert native.cache_dir() == tmp_path / "mine"
