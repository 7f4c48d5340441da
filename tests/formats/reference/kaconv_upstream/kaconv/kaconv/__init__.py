from .fastkanconv import FastKANConvLayer

__all__ = ["FastKANConvLayer"]