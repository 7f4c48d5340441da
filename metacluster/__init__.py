"""MetaCluster: compress Kolmogorov-Arnold Networks into a codebook and packed indices.

The public surface is re-exported here and loaded lazily, so `import metacluster`
stays cheap (the CLI starts fast) and never initialises CUDA. `metacluster.compress` is
the engine's package in every import order, and calling it runs the engine's `compress`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "KANModel": "metacluster.kan",
    "KANLayer": "metacluster.kan",
    "EdgeView": "metacluster.kan",
    "Basis": "metacluster.kan",
    "build_kan": "metacluster.kan",
    "load_model": "metacluster.formats",
    "save_model": "metacluster.formats",
    "inspect_model": "metacluster.formats",
    "export_model": "metacluster.formats",
    "Dataset": "metacluster.data",
    "load_dataset": "metacluster.data",
    "train_model": "metacluster.training",
    "evaluate": "metacluster.training",
    "MetaClusterConfig": "metacluster.compress",
    "compress": "metacluster.compress",
    "write_artifact": "metacluster.artifact",
    "load_artifact": "metacluster.artifact",
    "MetaClusterError": "metacluster.errors",
}

__all__ = [
    "Basis",
    "Dataset",
    "EdgeView",
    "KANLayer",
    "KANModel",
    "MetaClusterConfig",
    "MetaClusterError",
    "__version__",
    "build_kan",
    "compress",
    "evaluate",
    "export_model",
    "inspect_model",
    "load_artifact",
    "load_dataset",
    "load_model",
    "save_model",
    "train_model",
    "write_artifact",
]

if TYPE_CHECKING:
    from metacluster.artifact import load_artifact, write_artifact
    from metacluster.compress import MetaClusterConfig, compress
    from metacluster.data import Dataset, load_dataset
    from metacluster.errors import MetaClusterError
    from metacluster.formats import export_model, inspect_model, load_model, save_model
    from metacluster.kan import Basis, EdgeView, KANLayer, KANModel, build_kan
    from metacluster.training import evaluate, train_model


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metacluster' has no attribute {name!r}")
    value = importlib.import_module(module)
    # `compress` is the subpackage itself, callable as the verb: importing the subpackage
    # binds the same name, so `metacluster.compress` is one object in every import order.
    if module != f"{__name__}.{name}":
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
