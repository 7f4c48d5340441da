"""Baselines, registered as methods beside MetaCluster and sharing its run preparation,
fine-tuning stage and byte accounting: scalar weight clustering, uniform per-channel
int8/int4, and product quantization (faiss PQ).

Plain K-means on the trained vectors is the method "kmeans" (the pipeline without
the meta-learner stage, in `pipeline`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metacluster.compress import sizing
from metacluster.compress.numeric.codebook import (
    Codebook,
    CompressedKAN,
    QuantizedCoefficients,
    uniform_quant,
)
from metacluster.compress.numeric.kmeans import kmeans
from metacluster.compress.pipeline.context import Context, make_report
from metacluster.compress.pipeline.plan import Check, LayerPlan, StagePlan
from metacluster.compress.pipeline.registry import MethodOptions, NoOptions, register_method
from metacluster.compress.pipeline.report import CompressionReport, layer_details
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.stages.runners import run_finetune_stage
from metacluster.errors import ConfigError


def _coefs(ctx: Context) -> dict[str, torch.Tensor]:
    modules = dict(ctx.work.kan_layers())
    return {n: modules[n].edge_view(n).coefficients.detach().cpu().clone() for n in ctx.layers}


def scalar_codebooks(ctx: Context, bits: int) -> QuantizedCoefficients:
    """Deep Compression / tfmot weight clustering: 2^bits centroids over every scalar."""
    coefs = _coefs(ctx)
    cbs = []
    for gi, g in enumerate(ctx.groups):
        scalars = g.gather(coefs).reshape(-1, 1).numpy()
        k = min(1 << bits, scalars.shape[0])
        res = kmeans(
            scalars,
            k,
            seed=ctx.config.seed + gi,
            iters=ctx.config.kmeans_iters,
            restarts=1,
            device=ctx.device.type,
        )
        cbs.append(Codebook.from_kmeans(gi, res, g.coef_dim))
    return QuantizedCoefficients(
        ctx.config.scope, list(ctx.layers), ctx.groups, cbs, method="scalar"
    )


def pq_codebooks(ctx: Context, m: int, nbits: int) -> QuantizedCoefficients:
    """faiss ProductQuantizer: m sub-vectors of each edge vector, 2^nbits centroids each."""
    import faiss

    coefs = _coefs(ctx)
    cbs = []
    for gi, g in enumerate(ctx.groups):
        x = np.ascontiguousarray(g.gather(coefs).numpy().astype(np.float32))
        layers = ", ".join(dict.fromkeys(name for name, _ in g.members))
        problem = pq_problem(layers, x.shape[0], g.coef_dim, m, nbits)
        if problem is not None:  # before faiss, which would fail with a RuntimeError
            raise ConfigError(problem)
        pq = faiss.ProductQuantizer(g.coef_dim, m, nbits)
        pq.cp.seed = ctx.config.seed + gi
        pq.cp.min_points_per_centroid = 1
        pq.train(x)
        codes = pq.compute_codes(x)  # (n, code_size) bytes, bit-packed by faiss
        dsub = g.coef_dim // m
        cent = faiss.vector_to_array(pq.centroids).reshape(m, 1 << nbits, dsub)
        assign = _unpack_pq_codes(codes, m, nbits)
        for j in range(m):
            cbs.append(
                Codebook(
                    gi,
                    torch.from_numpy(cent[j].copy()),
                    torch.from_numpy(assign[:, j].copy()),
                    j * dsub,
                    (j + 1) * dsub,
                )
            )
    return QuantizedCoefficients(ctx.config.scope, list(ctx.layers), ctx.groups, cbs, method="pq")


def pq_problem(group: str, vectors: int, dim: int, m: int, bits: int) -> str | None:
    """Why faiss's PQ cannot train on a group of `vectors` vectors of length `dim` (None
    if it can): m must divide the length, and each sub-quantizer's 2^bits centroids need
    at least as many training vectors (faiss: "number of training points should be at
    least as large as number of clusters")."""
    if dim % m:
        return f"pq: m={m} must divide the vector length {dim} of {group}"
    if vectors < 1 << bits:
        fits = max(1, vectors.bit_length() - 1)
        return (
            f"pq: bits={bits} means {1 << bits} centroids per sub-quantizer, but {group} has "
            f"only {vectors} vectors to train them on (bits <= {fits} fits)"
        )
    return None


def pq_checks(layers: list[LayerPlan], config: MetaClusterConfig, options: Any) -> list[Check]:
    """`plan`'s check of PQ's options against the layers' codebook groups: per layer, or
    with scope global one group per vector length (a grid_policy "separate" split of a
    layer is known only when the run builds it, which checks again)."""
    groups: dict[int | str, tuple[str, int, int]] = {}
    for la in layers:
        key: int | str = la.coef_dim if config.scope == "global" else la.name
        name = f"the global group of length {la.coef_dim}" if config.scope == "global" else la.name
        _, vectors, _ = groups.get(key, (name, 0, la.coef_dim))
        groups[key] = (name, vectors + la.edges, la.coef_dim)
    problems = [
        p for g in groups.values() if (p := pq_problem(*g, options.m, options.bits)) is not None
    ]
    if problems:
        return [Check("method", False, "; ".join(problems))]
    detail = f"pq: m={options.m} and {1 << options.bits} centroids fit every codebook group"
    return [Check("method", True, detail)]


def _unpack_pq_codes(codes: np.ndarray, m: int, nbits: int) -> np.ndarray:
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : m * nbits].astype(np.int64)
    weights = 1 << np.arange(nbits, dtype=np.int64)
    return bits.reshape(-1, m, nbits) @ weights  # (n, m)


def uniform_quantization(ctx: Context, bits: int) -> QuantizedCoefficients:
    """Symmetric uniform quantization, one scale per output channel of each layer."""

    modules = dict(ctx.work.kan_layers())
    coefs = _coefs(ctx)
    uqs = [uniform_quant(name, modules[name], coefs[name], bits) for name in ctx.layers]
    return QuantizedCoefficients(
        ctx.config.scope, list(ctx.layers), ctx.groups, [], uqs, method=f"int{bits}"
    )


# -- options -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScalarOptions(MethodOptions):
    """2^bits centroids over every scalar of a group (Deep Compression's weight sharing)."""

    bits: int = 4

    def validate(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"scalar: bits must be in 1..16, got {self.bits}")


@dataclass(frozen=True)
class PQOptions(MethodOptions):
    """m sub-vectors per edge vector, 2^bits centroids per sub-quantizer (faiss PQ)."""

    m: int = 3
    bits: int = 4

    def validate(self) -> None:
        if not 1 <= self.m <= 64:
            raise ConfigError(f"pq: m must be in 1..64, got {self.m}")
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"pq: bits must be in 1..16, got {self.bits}")


# -- the shared runner -----------------------------------------------------------------
def _run_baseline(
    ctx: Context, quantize: Callable[[Context], QuantizedCoefficients], k: int
) -> tuple[CompressedKAN, CompressionReport]:
    """Quantize, fine-tune codebook baselines like MetaCluster's stage 3, report."""
    cfg = ctx.config
    t0 = time.perf_counter()
    ctx.hooks.report("quantize", 0, 1, None)
    quant = quantize(ctx)
    quant.grouping = cfg.grid_policy
    ctx.hooks.report("quantize", 1, 1, None)
    t_q = time.perf_counter() - t0
    t0 = time.perf_counter()
    if quant.codebooks and cfg.finetune_epochs > 0:
        quant = run_finetune_stage(
            ctx.work,
            ctx.fit,
            quant,
            cfg,
            device=ctx.device,
            hooks=ctx.hooks,
            budget=ctx.budget,
        )
    t_ft = time.perf_counter() - t0
    compressed = CompressedKAN(copy.deepcopy(ctx.work).cpu(), quant)
    report = make_report(ctx, compressed, k, {"quantize": t_q, "finetune": t_ft})
    report.layers = layer_details(ctx.source, compressed, report.layer_bytes)
    return compressed, report


def _stages(finetune: bool) -> Callable[[MetaClusterConfig, Any, list[int]], list[StagePlan]]:
    def stages(config: MetaClusterConfig, _options: Any, _ks: list[int]) -> list[StagePlan]:
        out = [StagePlan("quantize", 1.0)]
        if finetune and config.finetune_epochs > 0:
            out.append(StagePlan("finetune", float(config.finetune_epochs)))
        return out

    return stages


def _register_codebook_baseline(
    name: str,
    summary: str,
    options: type[ScalarOptions] | type[PQOptions],
    quantize: Callable[[Context, Any], QuantizedCoefficients],
    payload_bits: Callable[[LayerPlan, int, MetaClusterConfig, Any], int],
    checks: Callable[[list[LayerPlan], MetaClusterConfig, Any], list[Check]] | None = None,
) -> None:
    """A codebook baseline: quantize, then fine-tune like the pipeline's stage 3."""

    def run(ctx: Context, opts: Any) -> tuple[CompressedKAN, CompressionReport]:
        return _run_baseline(ctx, lambda c: quantize(c, opts), 1 << opts.bits)

    register_method(
        name,
        summary=summary,
        options=options,
        stages=_stages(finetune=True),
        payload_bits=payload_bits,
        uses_k=False,
        checks=checks,
    )(run)


_register_codebook_baseline(
    "scalar",
    "scalar weight clustering: 2^bits shared values per group, fine-tuned",
    ScalarOptions,
    lambda ctx, o: scalar_codebooks(ctx, o.bits),
    lambda layer, _k, config, o: sizing.scalar_bits(
        layer.edges, layer.coef_dim, o.bits, config.codebook_dtype
    ),
)
_register_codebook_baseline(
    "pq",
    "product quantization (faiss): m sub-vectors, 2^bits centroids each, fine-tuned",
    PQOptions,
    lambda ctx, o: pq_codebooks(ctx, o.m, o.bits),
    lambda layer, _k, config, o: sizing.pq_bits(
        layer.edges, layer.coef_dim, o.m, o.bits, config.codebook_dtype
    ),
    pq_checks,
)


def _register_uniform(bits: int) -> Callable[[Context, NoOptions], Any]:
    """Method int<bits>: uniform symmetric quantization, post-training."""

    def run(ctx: Context, _options: NoOptions) -> tuple[CompressedKAN, CompressionReport]:
        return _run_baseline(ctx, lambda c: uniform_quantization(c, bits), 0)

    return register_method(
        f"int{bits}",
        summary=f"uniform symmetric int{bits} per output channel",
        stages=_stages(finetune=False),
        payload_bits=lambda layer, _k, _c, _o: sizing.uniform_bits(
            layer.edges, layer.coef_dim, layer.outputs, bits
        ),
        uses_k=False,
    )(run)


_register_uniform(8)
_register_uniform(4)


__all__ = [
    "PQOptions",
    "ScalarOptions",
    "pq_checks",
    "pq_codebooks",
    "pq_problem",
    "scalar_codebooks",
    "uniform_quantization",
]
