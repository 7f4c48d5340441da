"""Builders for service tests: tiny KAN checkpoints, .npz datasets, API keys, job rows.

Checkpoints use the real layouts (efficient-kan state dict, our safetensors, pykan saveckpt).
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.db import session_scope
from core.settings import Settings
from service.auth import create_api_key


def efficient_kan_bytes(
    widths: list[int], *, grid_size: int = 5, order: int = 3, seed: int = 0
) -> bytes:
    """``torch.save`` of an efficient-kan ``KAN(widths).state_dict()`` (its exact keys)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    h = 2.0 / grid_size
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        grid = (torch.arange(-order, grid_size + order + 1) * h - 1.0).expand(n_in, -1).contiguous()
        sd[f"layers.{layer}.grid"] = grid
        sd[f"layers.{layer}.base_weight"] = torch.randn(n_out, n_in, generator=gen)
        sd[f"layers.{layer}.spline_weight"] = 0.1 * torch.randn(
            n_out, n_in, grid_size + order, generator=gen
        )
        sd[f"layers.{layer}.spline_scaler"] = torch.randn(n_out, n_in, generator=gen)
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def native_model_bytes(tmp: Path, widths: list[int]) -> bytes:
    """Our own format (safetensors + config) of a `build_kan` B-spline model."""
    from metacluster.formats import save_model
    from metacluster.kan import build_kan

    torch.manual_seed(0)
    path = tmp / "native.safetensors"
    save_model(build_kan("bspline", widths), path)
    return path.read_bytes()


def pykan_files(tmp: Path, widths: list[int]) -> tuple[Path, Path]:
    """(``m_config.yml``, ``m_state``) written by the real pykan ``saveckpt``."""
    import contextlib

    import kan

    with open(tmp / "pykan.log", "w") as sink, contextlib.redirect_stdout(sink):
        model = kan.KAN(width=widths, grid=3, k=3, seed=0, auto_save=False, ckpt_path=str(tmp))
        model.saveckpt(str(tmp / "m"))
    return tmp / "m_config.yml", tmp / "m_state"


def npz_bytes(
    *,
    n_features: int = 4,
    n_classes: int | None = 3,
    n_train: int = 32,
    n_test: int = 16,
    **overrides: Any,
) -> bytes:
    """An .npz dataset; ``n_classes=None`` makes a 1-target regression set."""
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "x_train": rng.uniform(-1, 1, (n_train, n_features)).astype(np.float32),
        "x_test": rng.uniform(-1, 1, (n_test, n_features)).astype(np.float32),
    }
    if n_classes is None:
        arrays["y_train"] = rng.normal(size=(n_train, 1)).astype(np.float32)
        arrays["y_test"] = rng.normal(size=(n_test, 1)).astype(np.float32)
    else:
        arrays["y_train"] = np.arange(n_train) % n_classes
        arrays["y_test"] = np.arange(n_test) % n_classes
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def make_key(settings: Settings, name: str = "tester") -> dict[str, str]:
    """A new API key; returns the Authorization header that carries it."""
    with session_scope(settings) as session:
        _, plaintext = create_api_key(session, name)
    return {"Authorization": f"Bearer {plaintext}"}
