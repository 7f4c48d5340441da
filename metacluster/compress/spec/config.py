"""MetaClusterConfig: every knob of one compression run, documented, bounded and versioned.

The knobs are declared once, with `knob(...)` (options.py): their default, what they do,
and their range or choices, in typed groups:

- `RunConfig`: what every method reads (method and `method_options`, K or a byte budget,
  effort and time budget, seed, device, validation split, training and storage knobs);
- one options group per family of methods, the "advanced parameters" only they read:
  `MetaLearnerOptions` (metacluster), `SoftOptions` (dkm, metacluster),
  `CodebookOptions` (dkm, metacluster, kmeans);
- the method's own options type (`MethodOptions`, e.g. pq's `m` and `bits`), given as
  `method_options` and checked by the type the method registered.

`MetaClusterConfig` is their union, flat: the shape the CLI's `--config` files, the HTTP
API's `config` and artifacts carry (a method's config type is `RunConfig` + its groups +
its options: `method_config_types`). It is validated once, when built, and frozen; its
`options` are the method's options, parsed then. `describe()` lists every knob for
documentation. A config round-trips through `to_dict` / `from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from metacluster.compress.spec.options import (
    DEFAULT_METHOD,
    MAX_EPOCHS,
    MAX_K,
    MethodOptions,
    MethodSpec,
    check_knob,
    default_of,
    epochs,
    fields_schema,
    knob,
    options_type,
    rate,
    registered_specs,
)
from metacluster.errors import ConfigError

# 2: `method`, `method_options`, grid_policy "shared", validation split, augmentation,
# byte budget, residual codebooks (a version-1 dict is read with these defaults, except
# that its grid_policy stays what it says).
# 3: `effort` (step budgets per stage) and `time_budget_s`; baselines off by default (an
# older dict keeps the baselines value it holds, and runs at effort "default").
# (The option groups of version 3 changed no key: a config's dict is still flat.)
CONFIG_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class RunConfig:
    """What every method reads: the method and its options, K or a byte budget, the effort
    and time budget, seed and device, the data split, training and storage knobs."""

    method: str = knob(
        DEFAULT_METHOD,
        "A registered compression method (`metacluster methods`): dkm (clustering-aware "
        "training of the coefficients, the default: it won the ablation in "
        "docs/compression.md), metacluster (the paper's meta-learner first), plain "
        "kmeans, or a baseline (scalar, pq, int8, int4).",
    )
    method_options: dict[str, Any] = knob(
        {}, "Options of that method, checked by the options class it registered."
    )
    k: int | list[int] = knob(
        16,
        "Codebook size; a list runs the meta-learner once and the per-K stages per K, "
        "and returns the smallest K within max_drop (on the validation split).",
        lo=2,
        hi=MAX_K,
        integer=True,
    )
    target_ratio: float | None = knob(
        None,
        "Byte budget as a ratio: the artifact must be at most bytes_before / target_ratio. "
        "The engine then chooses K per layer (a layer may also stay dense or take int8) "
        "from each layer's measured sensitivity; k is ignored.",
        lo=1.0,
        hi=1e6,
        optional=True,
    )
    max_bytes: int | None = knob(
        None,
        "Byte budget in bytes (the artifact's file size); as target_ratio.",
        lo=1,
        hi=1 << 40,
        integer=True,
        optional=True,
    )
    mode: str = knob(
        "post_hoc",
        "post_hoc: start from the uploaded coefficients; from_scratch: the paper's setting.",
        choices=("post_hoc", "from_scratch"),
    )
    effort: str = knob(
        "default",
        "How much work each stage may do: every training stage runs the steps its epochs "
        "ask for, at most the preset's step budget (edge evaluations over a step's cost, "
        "so a larger data set past a point adds no steps). fast: a CI smoke run; best: "
        "larger budgets (docs/compression.md).",
        choices=("fast", "default", "best"),
    )
    time_budget_s: float | None = knob(
        None,
        "Seconds the run may take on the machine it runs on: each training stage re-plans "
        "its steps from its measured pace to end by its share of the time left, and keeps "
        "its best state; the report says what each stage spent. Too small for even the "
        "fast preset is an error at plan time.",
        lo=1.0,
        hi=7 * 86400.0,
        optional=True,
    )
    distill: float = knob(
        1.0, "Weight of the distillation loss towards the source model.", lo=0.0, hi=1000.0
    )
    temperature: float = knob(
        2.0, "Softmax temperature of the classification distillation loss.", lo=1e-3, hi=100.0
    )
    finetune_epochs: int = epochs(
        30, "Codebook fine-tuning: centroids + other params, indices frozen."
    )
    finetune_lr: float = rate(1e-3, "Learning rate of fine-tuning.")
    batch_size: int = knob(256, "Minibatch size of every stage.", lo=1, hi=1 << 20, integer=True)
    val_fraction: float = knob(
        0.1,
        "Share of the training data held out as a validation split (never the test set): "
        "early stopping, the K recommendation and the budget allocation read it; 0, or a "
        "split of fewer than 64 samples, uses the training data itself.",
        lo=0.0,
        hi=0.5,
    )
    patience: int = epochs(
        0,
        "Early stopping: a stage stops after this many epochs without a better validation "
        "loss and keeps its best epoch; 0 keeps the best epoch without stopping early.",
    )
    augment: str = knob(
        "none",
        "Extra distillation inputs the teacher labels: mixup of training pairs, or "
        "Gaussian noise around training points (post_hoc only).",
        choices=("none", "mixup", "noise"),
    )
    augment_factor: float = knob(1.0, "Augmented inputs per training input.", lo=0.0, hi=100.0)
    scope: str = knob(
        "per_layer",
        "per_layer: one codebook per layer; global: one per basis across layers.",
        choices=("per_layer", "global"),
    )
    codebook_dtype: str = knob(
        "float32", "Storage type of codebooks.", choices=("float32", "float16")
    )
    other_dtype: str = knob(
        "float32", "Storage type of the dense parameters.", choices=("float32", "float16")
    )
    entropy: str = knob(
        "auto",
        "Index coding: auto keeps the smaller of bit packing and rANS.",
        choices=("auto", "none", "rans"),
    )
    include: list[str] = knob([], "Layers to compress (fnmatch patterns); empty: all.")
    exclude: list[str] = knob([], "Layers not to compress (fnmatch patterns).")
    min_edges: int = knob(1, "Layers with fewer edges stay dense.", lo=1, hi=1 << 40, integer=True)
    grid_policy: str = knob(
        "shared",
        "shared: edges whose inputs have different knot grids (pykan after a grid update) "
        "share their layer's codebook, each keeping its input's grid (the paper's "
        "clustering in coefficient space); separate: one codebook per distinct grid.",
        choices=("shared", "separate"),
    )
    kmeans_iters: int = knob(50, "Lloyd iterations of K-means.", lo=1, hi=10_000, integer=True)
    kmeans_restarts: int = knob(3, "K-means restarts (best kept).", lo=1, hi=100, integer=True)
    seed: int = knob(0, "Seed of every random choice.", lo=0, hi=2**32 - 1, integer=True)
    device: str = knob("auto", "auto, cpu, cuda or cuda:N.")
    max_drop: float = knob(
        0.01,
        "K sweep: the smallest K whose validation metric drops at most this much "
        "(accuracy as a fraction, or relative RMSE increase) is returned.",
        lo=0.0,
        hi=100.0,
    )
    version: int = knob(CONFIG_VERSION, "Config format version.", integer=True)


@dataclass(frozen=True)
class MetaLearnerOptions:
    """The meta-learner's knobs (advanced parameters): only `metacluster` reads them."""

    d_emb: int = knob(
        2, "Embedding size of every edge; the paper uses 1..4.", lo=1, hi=4, integer=True
    )
    hidden: int = knob(
        32, "Hidden width of the 2-layer meta-learner MLP.", lo=1, hi=4096, integer=True
    )
    regress_steps: int = knob(
        600,
        "Full-batch steps that fit embeddings + MLP to the uploaded vectors.",
        lo=0,
        hi=100_000,
        integer=True,
    )
    regress_lr: float = rate(1e-2, "Learning rate of that regression.")
    meta_epochs: int = epochs(
        30, "Joint training of meta-learner and other parameters on task + distillation loss."
    )
    cluster_weight: float = knob(
        0.0,
        "Weight of a term pulling generated vectors to their nearest centroid during the "
        "second half of meta training.",
        lo=0.0,
        hi=1000.0,
    )
    meta_scope: str = knob(
        "per_layer", "Grouping of the meta-learners.", choices=("per_layer", "global")
    )


@dataclass(frozen=True)
class SoftOptions:
    """The clustering-aware (soft K-means) stage's knobs: `dkm` and `metacluster` read them
    (meta_lr is also the meta-learner's learning rate)."""

    soft_epochs: int = epochs(
        100,
        "Clustering-aware epochs (at most the effort's step budget, like every stage's): the KAN runs on soft (annealed) assignments of the "
        "generated vectors to learnable centroids (DKM-style); 0 skips the stage.",
    )
    soft_min_steps: int = knob(
        1500,
        "The clustering-aware stage asks for at least this many optimizer steps: on small "
        "data sets (an epoch of a few batches) it runs more than soft_epochs epochs (Feynman "
        "I.12.11 at ratio 40, 3 seeds: RMSE 1.18x the original with 1000 steps, 0.92x with "
        "1500, 0.95x with 2000); the effort's step budget caps it like every stage.",
        lo=0,
        hi=1_000_000,
        integer=True,
    )
    soft_from: str = knob(
        "meta",
        "What the clustering-aware stage trains: the meta-learners (vectors stay on their "
        "manifold) or free vectors started from what the meta-learner generated.",
        choices=("meta", "free"),
    )
    meta_lr: float = rate(3e-3, "Learning rate of the meta and soft stages.")


@dataclass(frozen=True)
class CodebookOptions:
    """The K-means codebook pipeline's knobs: `dkm`, `metacluster` and `kmeans` read them."""

    residual_k: int = knob(
        0,
        "A second-stage codebook of this size over the residuals of the first (residual "
        "vector quantization); 0: none.",
        lo=0,
        hi=MAX_K,
        integer=True,
    )
    baselines: bool = knob(
        False,
        "Also run the baselines (scalar clustering, PQ, int4, int8; fine-tuned alike) from "
        "the original model, so the report shows them on the same byte axis (the report "
        "says what they cost).",
        choices=(True, False),
    )


@dataclass(frozen=True)
class MetaClusterConfig(RunConfig, CodebookOptions, MetaLearnerOptions, SoftOptions):
    """One compression run: every group's knobs, flat. Defaults are the recipe measured
    in docs/compression.md. Validated when built; frozen (`replace` makes a new one)."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def options(self) -> MethodOptions:
        """The method's options, parsed (by the type it registered) when the config was built."""
        parsed: MethodOptions = self.__dict__["_options"]
        return parsed

    @property
    def spec(self) -> MethodSpec:
        """The method's option types (what `method_options` and the groups it reads are)."""
        spec: MethodSpec = self.__dict__["_spec"]
        return spec

    def group(self, cls: type[Any]) -> Any:
        """This config's knobs of one group (`RunConfig`, `SoftOptions`, ...), typed."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    @property
    def run(self) -> RunConfig:
        """The knobs every method reads."""
        run: RunConfig = self.group(RunConfig)
        return run

    # -- validation --------------------------------------------------------
    @property
    def ks(self) -> list[int]:
        return list(self.k) if isinstance(self.k, list) else [self.k]

    @property
    def budgeted(self) -> bool:
        """A byte budget (target_ratio or max_bytes) decides K per layer."""
        return self.target_ratio is not None or self.max_bytes is not None

    def soft_epochs_for(self, samples: int) -> int:
        """Epochs of the clustering-aware stage over `samples` training inputs: soft_epochs,
        or more where that many epochs are fewer than soft_min_steps steps."""
        if self.soft_epochs == 0:
            return 0
        per_epoch = max(1, math.ceil(samples / self.batch_size))
        return min(MAX_EPOCHS, max(self.soft_epochs, math.ceil(self.soft_min_steps / per_epoch)))

    def validate(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(
                f"config version {self.version} is not supported (expected {CONFIG_VERSION})"
            )
        for f in dataclasses.fields(self):
            if f.name == "k":
                continue
            check_knob(f.name, getattr(self, f.name), f.metadata)
        ks = self.ks
        if not ks:
            raise ConfigError("k must be an integer >= 2 or a non-empty list of them")
        for k in ks:
            check_knob("k", k, _K_FIELD.metadata)
        if len(set(ks)) != len(ks):
            raise ConfigError(f"k list has duplicates: {ks}")
        if self.residual_k == 1:
            raise ConfigError("residual_k must be 0 (none) or at least 2")
        if self.target_ratio is not None and self.max_bytes is not None:
            raise ConfigError("give target_ratio or max_bytes, not both")
        if self.budgeted and self.scope != "per_layer":
            raise ConfigError("a byte budget chooses K per layer: it needs scope per_layer")
        if self.device not in ("auto", "cpu", "cuda") and not (
            isinstance(self.device, str)
            and self.device.startswith("cuda:")
            and self.device[5:].isdigit()
        ):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{name} must be a list of name patterns")
        if not isinstance(self.method_options, dict):
            raise ConfigError("method_options must be a JSON object")
        # The registry, not a list here, says which methods exist and what they accept
        # (options.py: the methods register their option types there).
        spec = options_type(self.method)
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_options", spec.parse(self.method_options))

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
            # 1 -> 2 added fields with defaults; 1's only grid policy was "separate";
            # 2 -> 3 added effort and time_budget_s, and baselines' default went to False
            older: dict[str, Any] = {"baselines": True} if version < 3 else {}
            if version == 1:
                older["grid_policy"] = "separate"
            data = {**older, **data, "version": CONFIG_VERSION}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # wrong types that slip past validation
            raise ConfigError(f"invalid config: {exc}") from exc

    @classmethod
    def default_dict(cls) -> dict[str, Any]:
        """`MetaClusterConfig().to_dict()`, read from the declarations (nothing to validate)."""
        return {f.name: default_of(f) for f in dataclasses.fields(cls)}

    def replace(self, **changes: Any) -> MetaClusterConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every knob: name, default, documentation and bounds (for docs and UIs)."""
        out = []
        for f in dataclasses.fields(cls):
            meta = dict(f.metadata)
            out.append({"name": f.name, "default": default_of(f), **meta})
        return out


_K_FIELD = next(f for f in dataclasses.fields(MetaClusterConfig) if f.name == "k")


def method_config_schema(name: str) -> dict[str, Any]:
    """JSON Schema of one method's config, flat as `MetaClusterConfig.to_dict` writes it:
    the `RunConfig` knobs, those of the groups the method reads, and its options type
    as `method_options`. Documentation: a config is checked by `MetaClusterConfig`."""
    spec = options_type(name)
    properties = fields_schema(RunConfig)
    properties["method"] = {**properties["method"], "const": name, "default": name}
    properties["method"].pop("enum", None)
    properties["method_options"] = {
        "type": "object",
        "description": f"The options of {name} ({spec.options.__name__}).",
        "properties": fields_schema(spec.options),
        "additionalProperties": False,
    }
    for group in spec.groups:
        properties.update(fields_schema(group))
    return {
        "type": "object",
        "title": f"{name} config",
        "description": f"The config of method {name}: RunConfig"
        + "".join(f" + {g.__name__}" for g in spec.groups)
        + f" + method_options ({spec.options.__name__}).",
        "properties": properties,
    }


def method_config_types() -> dict[str, tuple[type, ...]]:
    """Each registered method's config type, as the types it is made of: `RunConfig`,
    the option groups it reads, and its `MethodOptions` type (for `method_options`)."""
    return {s.name: (RunConfig, *s.groups, s.options) for s in registered_specs()}


__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_METHOD",
    "MAX_EPOCHS",
    "MAX_K",
    "CodebookOptions",
    "MetaClusterConfig",
    "MetaLearnerOptions",
    "RunConfig",
    "SoftOptions",
    "knob",
    "method_config_schema",
    "method_config_types",
]
