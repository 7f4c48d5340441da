"""Makes the reference libraries and helpers of tests/formats importable by plain name.

The vendored upstream sources (reference/*_upstream)
import their own packages by top-level name (`kans`, `kan_convs`, `convkan`), so their
folders go on the path too.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_VENDORED = (
    "torch_conv_kan_upstream",
    "convkan_upstream",
    "torchkan_upstream",
    "rkan_upstream",
    "kaconv_upstream",
)
for _path in (_HERE, *(_HERE / "reference" / name for name in _VENDORED)):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
