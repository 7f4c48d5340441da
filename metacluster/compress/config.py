"""MetaClusterConfig: every knob of one compression run, validated and versioned.

A config round-trips through `to_dict` / `from_dict`, so a job stored in a
database rebuilds exactly in a worker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from metacluster.errors import ConfigError

# 2: `method` and `method_options` (a version-1 dict is read as method "metacluster").
CONFIG_VERSION = 2
_READABLE_VERSIONS = (1, 2)

_MODES = ("post_hoc", "from_scratch")
_SCOPES = ("per_layer", "global")
_DTYPES = ("float32", "float16")
_ENTROPY = ("auto", "none", "rans")
_GRID_POLICIES = ("shared", "separate")
_DEVICES = ("auto", "cpu", "cuda")


@dataclass
class MetaClusterConfig:
    """One compression run. Defaults are the recipe measured in docs/compression.md."""

    # A registered compression method (`metacluster.compress.method_names()`): the
    # MetaCluster pipeline, plain K-means, or a baseline (scalar, pq, int8, int4).
    method: str = "metacluster"
    # Options of that method, checked by the options class it registered (e.g. pq: m, bits).
    method_options: dict[str, Any] = field(default_factory=dict)
    # Codebook size; a list runs the meta-learner once and K-means + fine-tuning per K.
    k: int | list[int] = 16
    # Embedding size of every edge; the paper uses 1..4 and the manifold is that thin.
    d_emb: int = 2
    # Hidden width of the 2-layer meta-learner MLP; it is shared by all edges of a group.
    hidden: int = 32
    # post_hoc: start from the uploaded coefficients; from_scratch: the paper's setting.
    mode: str = "post_hoc"
    # Full-batch regression steps that fit embeddings + MLP to the uploaded vectors.
    regress_steps: int = 600
    regress_lr: float = 1e-2
    # Joint training of meta-learner (and other params) on task + distillation loss.
    meta_epochs: int = 30
    meta_lr: float = 3e-3
    # Weight of the distillation loss towards the source model's outputs (post_hoc).
    distill: float = 1.0
    # Softmax temperature of the classification distillation loss.
    temperature: float = 2.0
    # Weight of the clustering-aware term: pulls generated vectors to their nearest
    # centroid (re-estimated every epoch) during the last half of meta training.
    cluster_weight: float = 0.0
    # Clustering-aware epochs after meta training: the KAN runs on soft (annealed)
    # K-means assignments of the generated vectors to learnable centroids (DKM-style).
    soft_epochs: int = 30
    # Codebook fine-tuning: centroids + other params, indices frozen.
    finetune_epochs: int = 5
    finetune_lr: float = 1e-3
    batch_size: int = 256
    # per_layer: one codebook per (layer, grid group); global: one per grid group.
    scope: str = "per_layer"
    # Meta-learners follow the same grouping unless shared across layers.
    meta_scope: str = "per_layer"
    codebook_dtype: str = "float32"
    other_dtype: str = "float32"
    # Index stream coding in the artifact: auto picks the smaller of packed / rANS.
    entropy: str = "auto"
    # Layers to compress: fnmatch patterns on layer names; empty include = all.
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    min_edges: int = 1
    # shared: edges whose inputs have different knot grids (pykan after a grid update)
    # share their layer's codebook in coefficient space, each keeping its input's grid
    # (the paper's clustering); separate: one codebook per distinct grid.
    grid_policy: str = "shared"
    kmeans_iters: int = 50
    kmeans_restarts: int = 3
    seed: int = 0
    device: str = "auto"
    # Sweep: recommend the smallest K whose metric drops at most this much
    # (accuracy points as a fraction, or relative RMSE increase for regression).
    max_drop: float = 0.01
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------
    @property
    def ks(self) -> list[int]:
        return list(self.k) if isinstance(self.k, list) else [self.k]

    def validate(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(
                f"config version {self.version} is not supported (expected {CONFIG_VERSION})"
            )
        if not isinstance(self.method_options, dict):
            raise ConfigError("method_options must be a JSON object")
        # The registry, not a list here, says which methods exist and what they accept.
        from metacluster.compress.methods import get_method

        get_method(self.method).parse_options(self.method_options)
        ks = self.ks
        if not ks:
            raise ConfigError("k must be an integer >= 2 or a non-empty list of them")
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, int) or k < 2:
                raise ConfigError(f"k must be an integer >= 2, got {k!r}")
            if k > 65536:
                raise ConfigError(f"k must be at most 65536, got {k}")
        if len(set(ks)) != len(ks):
            raise ConfigError(f"k list has duplicates: {ks}")
        if not isinstance(self.d_emb, int) or not 1 <= self.d_emb <= 4:
            raise ConfigError(f"d_emb must be an integer in 1..4, got {self.d_emb!r}")
        self._choice("mode", _MODES)
        self._choice("scope", _SCOPES)
        self._choice("meta_scope", _SCOPES)
        self._choice("codebook_dtype", _DTYPES)
        self._choice("other_dtype", _DTYPES)
        self._choice("entropy", _ENTROPY)
        self._choice("grid_policy", _GRID_POLICIES)
        if self.device not in _DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("hidden", "batch_size", "min_edges", "kmeans_iters", "kmeans_restarts"):
            self._positive_int(name)
        for name in ("regress_steps", "meta_epochs", "soft_epochs", "finetune_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("regress_lr", "meta_lr", "finetune_lr", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        for name in ("distill", "cluster_weight", "max_drop"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{name} must be a list of name patterns")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

    def _positive_int(self, name: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["include"] = list(self.include)
        out["exclude"] = list(self.exclude)
        out["method_options"] = dict(self.method_options)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaClusterConfig:
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        version = data.get("version", CONFIG_VERSION)
        if type(version) is int and version in _READABLE_VERSIONS and version != CONFIG_VERSION:
            data = {**data, "version": CONFIG_VERSION}  # 1 -> 2 added fields with defaults
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # wrong types that slip past validation
            raise ConfigError(f"invalid config: {exc}") from exc

    def replace(self, **changes: Any) -> MetaClusterConfig:
        return dataclasses.replace(self, **changes)
