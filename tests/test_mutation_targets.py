"""Tests written to kill surviving mutants of the mutation run (docs/reliability.md).

Each pins a behaviour of `kan/bspline.py`, `compress/kmeans.py`, `compress/packing.py`
or `artifact.py` that the rest of the suite only exercised loosely.
"""

from __future__ import annotations
