"""`resolve_device`: the one place a device name becomes a `torch.device`.

"auto" picks CUDA when this process sees a GPU; naming CUDA without one is a
`ConfigError`. Importing this module never initialises CUDA.
"""

from __future__ import annotations

import torch

from metacluster.errors import ConfigError


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything else as torch understands it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return resolved


__all__ = ["resolve_device"]
