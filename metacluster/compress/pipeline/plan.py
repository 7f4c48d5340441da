"""`plan`: what a compression run will do, decided before anything is loaded or trained.

From a model description (`metacluster.kan.describe_model`, which `inspect_model`
returns and the service stores with an upload), a data set's shape (`DatasetMeta`)
and a `MetaClusterConfig`, `plan` returns the layers to compress with their K, the
edge counts, the expected artifact size, the stages with their share of the run
time, and the checks that model, data and config fit together. The engine plans its
own run with the same function, so the service's validation and dry run, the
worker's progress bar and the engine apply one set of rules.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from metacluster.compress import sizing
from metacluster.compress.pipeline.registry import get_method
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.effort import minimum_seconds, stage_weight, work_per_sample
from metacluster.data.dataset import DatasetMeta
from metacluster.errors import ConfigError, IncompatibleError

# Manifest and container bytes of an artifact besides the payload (format v2: deflated
# manifest): measured on the benchmark's artifacts, 510-593 bytes with two KAN layers and
# 702 with three (container 104). An estimate: the budget's allocation measures the model's
# own config, and the written file is exact.


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class LayerPlan:
    name: str
    edges: int
    coef_dim: int
    outputs: int  # output features / channels
    k: int | None  # codebook size of this layer (None: the method has no K)
    mode: str = "codebook"  # or "uniform" (int8) / "dense", when a byte budget says so
    positions: int = 1  # evaluations of each edge per sample (a conv layer's output positions)


@dataclass(frozen=True)
class StagePlan:
    """One visit of a stage; a K sweep visits the per-K stages once per K."""

    name: str
    weight: float
    k: int | None = None


@dataclass
class Plan:
    method: str
    layers: list[LayerPlan]
    ks: list[int]
    stages: list[StagePlan]
    checks: list[Check]
    # Expected artifact bytes per K (one entry keyed 0 for methods without a K, or for a
    # byte budget's allocation).
    expected_bytes: dict[int, int] = field(default_factory=dict)
    budget_bytes: int | None = None

    @property
    def edges(self) -> int:
        return sum(layer.edges for layer in self.layers)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def config_problem(self) -> bool:
        """Whether every failed check is the config's alone (K, layers, method options,
        budget), not a model and data that do not fit."""
        return all(c.name in _CONFIG_CHECKS for c in self.checks if not c.ok)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def raise_for_problems(self) -> None:
        """ConfigError for a bad K or layer selection, IncompatibleError for data."""
        failed = [c for c in self.checks if not c.ok]
        if not failed:
            return
        message = "; ".join(c.detail for c in failed)
        if self.config_problem:
            raise ConfigError(message)
        raise IncompatibleError(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "ks": list(self.ks),
            "edges": self.edges,
            "layers": [asdict(layer) for layer in self.layers],
            "stages": [asdict(s) for s in self.stages],
            "expected_bytes": {str(k): v for k, v in self.expected_bytes.items()},
            "budget_bytes": self.budget_bytes,
            "checks": [c.to_dict() for c in self.checks],
        }


_CONFIG_CHECKS = frozenset({"layers", "k_vs_edges", "method", "budget", "time_budget"})


def select_layer_names(
    layers: Iterable[tuple[str, int]], include: list[str], exclude: list[str], min_edges: int
) -> list[str]:
    """Names (in order) of the (name, edges) layers that include/exclude/min_edges keep."""
    out = []
    for name, edges in layers:
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        if edges >= min_edges:
            out.append(name)
    return out


def _input_check(info: Mapping[str, Any], data: DatasetMeta) -> Check:
    layers = list(info.get("layers") or [])
    wanted: Mapping[str, Any] = info.get("input") or {}
    if not wanted:  # a description from before `input` was recorded
        first_in = int(layers[0]["in"])
        key = "channels" if info.get("kind") == "conv" else "features"
        wanted = {key: first_in}
    if "channels" in wanted:
        channels = data.input_shape[0] if len(data.input_shape) == 3 else 1
        ok = int(wanted["channels"]) == channels
        detail = f"model takes {wanted['channels']} input channels, dataset has {channels}"
    else:
        ok = int(wanted["features"]) == data.n_features
        detail = (
            f"model takes {wanted['features']} inputs, dataset has {data.n_features} "
            f"{list(data.input_shape)}"
        )
    return Check("input_size", ok, detail)


def _output_check(info: Mapping[str, Any], data: DatasetMeta) -> Check:
    width = info.get("output_features")
    if width is None:
        if info.get("kind") == "conv" or "input" in info:
            return Check("outputs", True, "not checked: the model's output width is unknown")
        width = int(list(info["layers"])[-1]["out"])  # an older description: dense stack
        ok = width == data.n_outputs
    elif data.task == "classification":
        ok = int(width) >= data.n_outputs  # a logit per class at least, as the engine checks
    else:
        ok = int(width) == data.n_outputs
    what = (
        f"{data.n_classes} classes"
        if data.task == "classification"
        else f"{data.n_outputs} targets"
    )
    return Check("outputs", ok, f"model has {width} outputs, dataset has {what}")


def plan(
    model_info: Mapping[str, Any], data: DatasetMeta | None, config: MetaClusterConfig
) -> Plan:
    """The plan of compressing the described model on `data` with `config`.

    Never raises for a model and data that do not fit: the failed checks say why
    (`Plan.raise_for_problems` turns them into the library's errors).
    """
    method = get_method(config.method)
    options = config.options  # parsed once, when the config was built
    all_layers = list(model_info.get("layers") or [])
    checks: list[Check] = []
    if not all_layers:
        checks.append(Check("layers", False, "the model has no KAN layers to compress"))
        return Plan(method.name, [], config.ks, [], checks)
    if data is not None:
        checks.append(_input_check(model_info, data))
        checks.append(_output_check(model_info, data))
    names = select_layer_names(
        ((str(la["name"]), int(la["edges"])) for la in all_layers),
        config.include,
        config.exclude,
        config.min_edges,
    )
    by_name = {str(la["name"]): la for la in all_layers}
    ks = config.ks if method.uses_k else []
    if not names:
        checks.append(
            Check(
                "layers",
                False,
                "no KAN layer matches include/exclude/min_edges; nothing to compress",
            )
        )
        return Plan(method.name, [], ks, [], checks)
    total = sum(int(by_name[n]["edges"]) for n in names)
    if method.uses_k:
        k = max(ks)
        checks.append(
            Check(
                "k_vs_edges",
                k <= total,
                f"K={k}, {total} edges to compress in {len(names)} layers"
                if k <= total
                else f"k={k} exceeds the number of edges to compress ({total})",
            )
        )
    layer_k = ks[0] if ks else None
    layers = [
        LayerPlan(
            n,
            int(by_name[n]["edges"]),
            int(by_name[n]["coef_dim"]),
            int(by_name[n].get("out", 1)),
            layer_k,
            positions=int(by_name[n].get("positions", 1)),
        )
        for n in names
    ]
    if method.checks is not None:
        checks += method.checks(layers, config, options)
    other = int(model_info.get("other_params") or 0)
    # Coefficients of layers left dense stay in the artifact at fp32.
    dense_left = sum(
        int(la["edges"]) * int(la["coef_dim"]) for la in all_layers if str(la["name"]) not in names
    )
    other_bytes = sizing.value_bytes(config.other_dtype) * other + 4 * dense_left
    header = sizing.header_bytes(len(layers))
    expected: dict[int, int] = {}
    budget: int | None = None
    if config.budgeted and method.uses_k:
        budget, layers, payload = _plan_budget(model_info, layers, config, other_bytes + header)
        if payload is None:
            checks.append(Check("budget", budget is None, "a byte budget needs the model's size"))
        else:
            assert budget is not None
            fits = payload + other_bytes + header <= budget
            checks.append(
                Check(
                    "budget",
                    fits,
                    f"budget {budget} bytes; expected {payload + other_bytes + header} bytes"
                    if fits
                    else f"the byte budget of {budget} bytes cannot be met: the smallest "
                    f"codebooks need about {payload + other_bytes + header} bytes",
                )
            )
            expected[0] = payload + other_bytes + header
        ks = [max((la.k or 0) for la in layers)] if layers else []
    else:
        for k in ks or [0]:
            bits = sum(method.payload_bits(layer, k, config, options) for layer in layers)
            expected[k] = math.ceil(bits / 8) + other_bytes + header
    n_train = data.n_train if data is not None else None
    work = work_per_sample(layers)
    if config.time_budget_s is not None:
        checks.append(_time_check(config, work, n_train))
    return Plan(
        method.name,
        layers,
        ks,
        priced_stages(method.stages(config, options, ks), config, work, n_train),
        checks,
        expected_bytes=expected,
        budget_bytes=budget,
    )


def priced_stages(
    stages: list[StagePlan], config: MetaClusterConfig, work: int, n_train: int | None
) -> list[StagePlan]:
    """The stage visits weighted by their expected cost (effort.stage_weight); stages it
    does not price (K-means, the allocation, a baseline's quantizer) weigh a twentieth of
    the priced ones each. A soft stage the effort skips on this model (weight 0) is left
    out."""
    priced = [stage_weight(config, s.name, work, n_train) for s in stages]
    kept = [(s, w) for s, w in zip(stages, priced, strict=True) if s.name != "soft" or w != 0.0]
    stages, priced = [s for s, _ in kept], [w for _, w in kept]
    known = [w for w in priced if w is not None]
    if not known:
        return stages
    other = max(0.05 * sum(known), 1e-6)
    return [
        dataclasses.replace(s, weight=round(other if w is None else max(w, 1e-6), 6))
        for s, w in zip(stages, priced, strict=True)
    ]


def _time_check(config: MetaClusterConfig, work: int, n_train: int | None) -> Check:
    need = minimum_seconds(work, config.batch_size, n_train or 0)
    ok = config.time_budget_s is not None and config.time_budget_s >= need
    return Check(
        "time_budget",
        ok,
        f"time budget {config.time_budget_s} s; the fast effort needs about {need:.0f} s"
        if ok
        else f"time_budget_s={config.time_budget_s} is too small for this model and data: "
        f"even effort fast needs about {need:.0f} s",
    )


def _plan_budget(
    info: Mapping[str, Any], layers: list[LayerPlan], config: MetaClusterConfig, fixed: int
) -> tuple[int | None, list[LayerPlan], int | None]:
    """A data-free estimate of a byte budget's allocation: each layer's loss taken as
    proportional to its coefficients over K (the engine measures the real one).
    Returns (budget, layers with their K and mode, expected payload bytes) - the payload
    of the smallest storage when even that exceeds the budget."""
    from metacluster.compress.stages.allocation import (
        MAX_BUDGET_K,
        LayerChoice,
        Option,
        k_steps,
        solve,
        spend_leftover,
    )

    if config.max_bytes is not None:
        budget = int(config.max_bytes)
    elif info.get("bytes"):
        assert config.target_ratio is not None
        budget = int(int(info["bytes"]) / config.target_ratio)
    else:
        return None, layers, None
    dense = sizing.value_bytes(config.other_dtype)
    options: dict[str, list[Option]] = {}
    for la in layers:
        size = la.edges * la.coef_dim
        opts = [
            Option(LayerChoice("dense"), size * dense, 0.0),
            Option(LayerChoice("uniform", bits=8), size + 4 * la.outputs, size / MAX_BUDGET_K),
        ]
        for k in k_steps(min(MAX_BUDGET_K, la.edges)):
            bits = codebook_bits(la, k, config)
            if config.residual_k:
                bits += codebook_bits(la, config.residual_k, config)
            opts.append(Option(LayerChoice("codebook", k), math.ceil(bits / 8), size / k))
        options[la.name] = opts
    chosen = solve(options, budget - fixed)
    if chosen is not None:
        chosen = spend_leftover(options, chosen, budget - fixed)
    if chosen is None:
        return budget, layers, sum(min(o.bytes for o in opts) for opts in options.values())
    planned = [
        dataclasses.replace(la, k=chosen[la.name].choice.k, mode=chosen[la.name].choice.mode)
        for la in layers
    ]
    return budget, planned, sum(o.bytes for o in chosen.values())


def codebook_bits(layer: LayerPlan, k: int, config: MetaClusterConfig) -> int:
    """Bits of one layer stored as a K-entry codebook of whole vectors + packed indices."""
    return sizing.codebook_bits(layer.edges, layer.coef_dim, k, config.codebook_dtype)


class StageProgress:
    """Maps progress(stage, step, total) to one monotone fraction of the whole run.

    Stage visits are matched in plan order: a report for another stage closes the
    current visit and moves to the next visit of that name (stages restored from a
    checkpoint, or skipped, count as done). Stays below 1: a run is complete only once
    its caller has stored the result.
    """

    def __init__(self, stages: list[StagePlan]) -> None:
        self.stages = list(stages)
        self.total = sum(s.weight for s in self.stages)
        self._index = -1
        self._done = 0.0
        self._fraction = 0.0

    @property
    def current(self) -> str | None:
        return self.stages[self._index].name if 0 <= self._index < len(self.stages) else None

    def update(self, stage: str, step: int, total: int) -> float:
        if stage != self.current:
            nxt = next(
                (
                    i
                    for i in range(self._index + 1, len(self.stages))
                    if self.stages[i].name == stage
                ),
                None,
            )
            if nxt is None:  # a stage the plan did not foresee: one more visit at the end
                self.stages.append(StagePlan(stage, 1.0))
                self.total += 1.0
                nxt = len(self.stages) - 1
            self._done = sum(s.weight for s in self.stages[:nxt])
            self._index = nxt
        weight = self.stages[self._index].weight
        part = weight * (min(step, total) / total if total > 0 else 0.0)
        self._fraction = max(self._fraction, min(0.99, (self._done + part) / max(self.total, 1e-9)))
        return self._fraction


__all__ = [
    "Check",
    "LayerPlan",
    "Plan",
    "StagePlan",
    "StageProgress",
    "codebook_bits",
    "plan",
    "select_layer_names",
]
