"""KAN layer families, the canonical edge view and `build_kan`.

Importing this package registers every layer family and glue module with `KANModel`.
"""

from __future__ import annotations

from metacluster.kan.base import Basis, EdgeView, KANLayer, grid_fingerprint
from metacluster.kan.bottleneck import (
    GramBottleneckKANConv2d,
    GramBottleneckKANLayer,
    ReLUBottleneckKANConv2d,
)
from metacluster.kan.bspline import BSplineKANLayer, PyKANLayer
from metacluster.kan.build import build_conv_kan, build_kan
from metacluster.kan.chebyshev import ChebyKANLayer
from metacluster.kan.conv import ChebyKANConv2d, KANConv2d
from metacluster.kan.families import (
    Family,
    family_names,
    family_of,
    get_family,
    model_kind,
    register_family,
)
from metacluster.kan.fourier import FourierKANLayer
from metacluster.kan.glue import (
    Affine,
    AvgPool2d,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    Linear,
    MaxPool2d,
    PReLU,
    Reshape,
    SiLU,
)
from metacluster.kan.model import MODULE_TYPES, KANModel, build_module, module_config
from metacluster.kan.polynomial import (
    BernsteinKANConv2d,
    BernsteinKANLayer,
    GramKANConv2d,
    GramKANLayer,
    JacobiKANConv2d,
    JacobiKANLayer,
    LegendreKANConv2d,
    LegendreKANLayer,
)
from metacluster.kan.rational import GroupRationalKANLayer
from metacluster.kan.rbf import RBFKANLayer
from metacluster.kan.rbf_conv import RBFKANConv2d
from metacluster.kan.rkan import JacobiRKANLayer, PadeRKANLayer
from metacluster.kan.summary import describe_model
from metacluster.kan.wavelet import WaveletKANLayer
from metacluster.kan.wavelet_conv import WaveletKANConv2d

__all__ = [
    "MODULE_TYPES",
    "Affine",
    "AvgPool2d",
    "BSplineKANLayer",
    "Basis",
    "BernsteinKANConv2d",
    "BernsteinKANLayer",
    "ChebyKANConv2d",
    "ChebyKANLayer",
    "EdgeView",
    "Family",
    "Flatten",
    "FourierKANLayer",
    "GlobalAvgPool",
    "GramBottleneckKANConv2d",
    "GramBottleneckKANLayer",
    "GramKANConv2d",
    "GramKANLayer",
    "GroupRationalKANLayer",
    "JacobiKANConv2d",
    "JacobiKANLayer",
    "JacobiRKANLayer",
    "KANConv2d",
    "KANLayer",
    "KANModel",
    "LayerNorm",
    "LegendreKANConv2d",
    "LegendreKANLayer",
    "Linear",
    "MaxPool2d",
    "PReLU",
    "PadeRKANLayer",
    "PyKANLayer",
    "RBFKANConv2d",
    "RBFKANLayer",
    "ReLUBottleneckKANConv2d",
    "Reshape",
    "SiLU",
    "WaveletKANConv2d",
    "WaveletKANLayer",
    "build_conv_kan",
    "build_kan",
    "build_module",
    "describe_model",
    "family_names",
    "family_of",
    "get_family",
    "grid_fingerprint",
    "model_kind",
    "module_config",
    "register_family",
]
