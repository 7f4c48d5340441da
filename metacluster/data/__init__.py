"""Data sets for training and compression: built-ins that work offline and file readers.

`load_dataset("digits" | "mnist1d" | "eq:<name>" | path)` returns a validated `Dataset`.
"""

from metacluster.data.dataset import Dataset, DatasetMeta, Task, dataset_from_arrays, infer_task
from metacluster.data.equations import EQUATIONS, list_equations
from metacluster.data.loading import (
    BUILTIN_DATASETS,
    builtin_sample_count,
    is_builtin,
    load_dataset,
)

__all__ = [
    "BUILTIN_DATASETS",
    "EQUATIONS",
    "Dataset",
    "DatasetMeta",
    "Task",
    "builtin_sample_count",
    "dataset_from_arrays",
    "infer_task",
    "is_builtin",
    "list_equations",
    "load_dataset",
]
