"""Makes the reference libraries and helpers of tests/formats importable by plain name.

torch-conv-kan's vendored source (reference/torch_conv_kan_upstream) imports its own
packages by top-level name (`kans`, `kan_convs`), so its folder goes on the path too.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE / "reference" / "torch_conv_kan_upstream"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
