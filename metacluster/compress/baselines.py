"""Baselines through the same code path and byte accounting as MetaCluster: scalar weight
clustering, uniform per-channel int8/int4, and product quantization (faiss PQ).

Plain K-means on the trained vectors is `compress_kmeans` (the pipeline without stage 1).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from metacluster.compress.codebook import (
    Codebook,
    CompressedKAN,
    QuantizedCoefficients,
    UniformQuant,
)
from metacluster.compress.config import MetaClusterConfig
from metacluster.compress.kmeans import kmeans
from metacluster.compress.pipeline import Context, finish_report, prepare
from metacluster.compress.report import CompressionReport, layer_details, source_bytes
from metacluster.compress.stages import StageHooks, run_finetune_stage
from metacluster.data.dataset import Dataset
from metacluster.errors import ConfigError
from metacluster.kan.model import KANModel

BASELINES = ("scalar", "int8", "int4", "pq")


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
        cbs.append(
            Codebook(
                gi,
                torch.from_numpy(res.centroids.copy()),
                torch.from_numpy(res.assignment.copy()),
                0,
                g.coef_dim,
            )
        )
    return QuantizedCoefficients(
        ctx.config.scope, list(ctx.layers), ctx.groups, cbs, method="scalar"
    )


def pq_codebooks(ctx: Context, m: int, nbits: int) -> QuantizedCoefficients:
    """faiss ProductQuantizer: m sub-vectors of each edge vector, 2^nbits centroids each."""
    import faiss

    coefs = _coefs(ctx)
    cbs = []
    for gi, g in enumerate(ctx.groups):
        if g.coef_dim % m:
            raise ConfigError(f"PQ needs m to divide the vector length {g.coef_dim}, got m={m}")
        x = np.ascontiguousarray(g.gather(coefs).numpy().astype(np.float32))
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


def _unpack_pq_codes(codes: np.ndarray, m: int, nbits: int) -> np.ndarray:
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : m * nbits].astype(np.int64)
    weights = 1 << np.arange(nbits, dtype=np.int64)
    return bits.reshape(-1, m, nbits) @ weights  # (n, m)


def uniform_quantization(ctx: Context, bits: int) -> QuantizedCoefficients:
    """Symmetric uniform quantization, one scale per output channel of each layer."""

    modules = dict(ctx.work.kan_layers())
    coefs = _coefs(ctx)
    qmax = (1 << (bits - 1)) - 1
    uqs = []
    for name in ctx.layers:
        w = coefs[name].float()
        outputs = modules[name].edge_index()[:, 0]
        n_out = int(outputs.max()) + 1
        absmax = torch.zeros(n_out).scatter_reduce(0, outputs, w.abs().amax(1), reduce="amax")
        scales = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
        codes = torch.round(w / scales[outputs][:, None]).clamp(-qmax, qmax).long()
        uqs.append(UniformQuant(name, bits, scales, codes, outputs))
    return QuantizedCoefficients(
        ctx.config.scope, list(ctx.layers), ctx.groups, [], uqs, method=f"int{bits}"
    )


def run_baseline(
    method: str,
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    *,
    bits: int = 4,
    m: int = 3,
    finetune: bool = True,
) -> tuple[CompressedKAN, CompressionReport]:
    """Compress with a baseline; codebook baselines get the same fine-tuning stage."""
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; expected one of {', '.join(BASELINES)}")
    cfg = config.replace(k=config.ks[0])
    ctx = prepare(model, cfg, data, StageHooks(), None, method)
    t0 = time.perf_counter()
    if method == "scalar":
        quant, k = scalar_codebooks(ctx, bits), 1 << bits
    elif method == "pq":
        quant, k = pq_codebooks(ctx, m, bits), 1 << bits
    else:
        quant, k = uniform_quantization(ctx, 8 if method == "int8" else 4), 0
    t_q = time.perf_counter() - t0
    t0 = time.perf_counter()
    if finetune and quant.codebooks and cfg.finetune_epochs > 0:
        quant = run_finetune_stage(
            ctx.work, data, quant, cfg, teacher=ctx.teacher, device=ctx.device, hooks=ctx.hooks
        )
    t_ft = time.perf_counter() - t0
    compressed = CompressedKAN(copy.deepcopy(ctx.work).cpu(), quant)
    bytes_before, how = source_bytes(ctx.source)
    report = finish_report(
        ctx,
        compressed,
        k,
        {"quantize": t_q, "finetune": t_ft},
        bytes_before,
        how,
        method,
        None,
        None,
    )
    report.layers = layer_details(ctx.source, compressed, cfg.codebook_dtype, cfg.entropy)
    return compressed, report
