# Not upstream: torch-conv-kan's own kans/__init__.py also imports kans/kan.py, which needs
# the repository's top-level utils package; the tests only need the layers.
from .layers import BernsteinKANLayer, GRAMLayer, JacobiKANLayer, KALNLayer, WavKANLayer
from .utils import RadialBasisFunction
