from convkan.convkan_layer import ConvKAN
from convkan.kanlinear import KANLinear
from convkan.layernorm2d import LayerNorm2D

__all__ = ["ConvKAN", "KANLinear", "LayerNorm2D"]
