# Not upstream: only the module the vendored layers import (see ../UPSTREAM.md).
from .regularization import NoiseInjection

__all__ = ["NoiseInjection"]
