"""The fused C kernel of the codebook runtime, compiled at first use, with a torch fallback.

One call runs a whole uniform-grid cubic B-spline codebook layer (the layout our
engine writes by default: one vector-quantization codebook over every column of the
edge vector, K <= 256) on contiguous fp32 inputs, row by row:

1. the k+1 = 4 nonzero cardinal B-spline values of each input and its SiLU (base
   branch) in closed form, the same arithmetic as `_UniformBSplineFeatures`;
2. the projection of those 5 features on the codebook: T[i, :] = sum of 5 rows of
   the transposed centroids (L, 16) - one 16-lane vector per input (K <= 16), or K
   floats (K <= 256);
3. gather and sum: y[o] += T[i, code[i, o]] over inputs i, with codes stored
   input-major (I, O) uint8 so that 16 outputs are served by one in-register
   permutation of T[i] (AVX-512 `vpermps`; with AVX2 two 8-lane permutes and a
   blend per 8 outputs); K > 16, or a CPU with neither, reads T[i, code] scalar.

The source is C (GCC vector extensions, x86 intrinsics only under their feature
macros, so it builds on any target), built with the system C
compiler (`$CC` or `cc`) as `-O3 -march=native -shared` into a cache directory
(`$METACLUSTER_NATIVE_CACHE`, default `~/.cache/metacluster/native`) keyed by the
source, flags, compiler and CPU, and loaded with ctypes (no torch headers: the build
takes about a second). `METACLUSTER_NATIVE_MARCH` overrides `native` (e.g.
`x86-64-v3`: the AVX2 path, `x86-64`: the scalar one). Without a compiler, when the
build or load fails, or with `METACLUSTER_NATIVE=0`, `kernel()` is None and the runtime stays on its torch
kernels (`metacluster.runtime.kernels`), which compute the same sums.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

FLAGS = (
    "-O3",
    "-shared",
    "-fPIC",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-std=gnu11",
)

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

typedef float v16sf __attribute__((vector_size(64)));
typedef float v16sf_u __attribute__((vector_size(64), aligned(4)));

/* exp(x) for |x| <= 88 in the Cephes form (relative error ~1e-7), branch-free so
   that the basis loop vectorises; callers redo non-finite inputs with expf. */
static inline float exp_poly(float x) {
    x = x < -88.0f ? -88.0f : (x > 88.0f ? 88.0f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Per input of one row: its cell slot (0 = left of the knots, c + 1 = knot interval
   c, n_cells + 1 = right of them, NaN included), its 4 cubic B-spline window values
   (the arithmetic of _UniformBSplineFeatures) and its SiLU. */
static void basis_row(const float *restrict x, const float *restrict t0,
                      const float *restrict inv_h, int64_t n_in, float n_cells,
                      int32_t *restrict slot, float *restrict v, float *restrict silu) {
    float *restrict v0 = v, *restrict v1 = v + n_in, *restrict v2 = v + 2 * n_in,
                    *restrict v3 = v + 3 * n_in;
    for (int64_t i = 0; i < n_in; i++) {
        const float xi = x[i];
        float u = (xi - t0[i]) * inv_h[i];
        u = u != u ? n_cells : u;
        u = u < -1.0f ? -1.0f : (u > n_cells ? n_cells : u);
        const float cell = floorf(u);
        const float t = u - cell;
        slot[i] = (int32_t)cell + 1;
        const float s = 1.0f - t, t2 = t * t, t3 = t2 * t;
        const float a = s * s * s * (1.0f / 6.0f), d = t3 * (1.0f / 6.0f);
        const float b = (t3 * 0.5f - t2) + (2.0f / 3.0f);
        v0[i] = a;
        v1[i] = b;
        v2[i] = -((a + b) + d) + 1.0f;
        v3[i] = d;
        silu[i] = xi / (1.0f + exp_poly(-xi));
    }
    for (int64_t i = 0; i < n_in; i++)
        if (!isfinite(x[i])) silu[i] = x[i] / (1.0f + expf(-x[i]));
}

/* T[i, :] (stride kp) = sum_r v_r[i] * win[slot[i], r, :] + silu[i] * base_row:
   win (n_cells + 2, 4, kp) holds, per cell slot, the transposed centroid rows of its
   4 window bases (zero where a basis does not exist). */
static void project_row(const int32_t *slot, const float *v, const float *silu, int64_t n_in,
                        const float *win, const float *base_row, int64_t kp, float *table) {
    const float *v0 = v, *v1 = v + n_in, *v2 = v + 2 * n_in, *v3 = v + 3 * n_in;
    for (int64_t i = 0; i < n_in; i++) {
        const float *m = win + (int64_t)slot[i] * 4 * kp;
        float *out = table + i * kp;
        if (kp == 16) {
            v16sf acc = v0[i] * *(const v16sf_u *)m + v1[i] * *(const v16sf_u *)(m + 16);
            acc += v2[i] * *(const v16sf_u *)(m + 32) + v3[i] * *(const v16sf_u *)(m + 48);
            if (base_row) acc += silu[i] * *(const v16sf_u *)base_row;
            *(v16sf_u *)out = acc;
        } else {
            for (int64_t k = 0; k < kp; k++) {
                float acc = v0[i] * m[k] + v1[i] * m[kp + k] + v2[i] * m[2 * kp + k] +
                            v3[i] * m[3 * kp + k];
                out[k] = base_row ? acc + silu[i] * base_row[k] : acc;
            }
        }
    }
}

/* y (rows, n_out) = sum over inputs i of T[i, codes[i, o]]; codes (n_in, n_out). */
static void gather_row(const float *table, const uint8_t *codes, int64_t n_in, int64_t n_out,
                       int64_t kp, float *y) {
    memset(y, 0, (size_t)n_out * sizeof(float));
    for (int64_t i = 0; i < n_in; i++) {
        const float *ti = table + i * kp;
        const uint8_t *cr = codes + i * n_out;
        int64_t o = 0;
#if defined(__AVX512F__)
        if (kp == 16) { /* one vpermps serves 16 outputs */
            const __m512 tv = _mm512_loadu_ps(ti);
            for (; o + 16 <= n_out; o += 16) {
                const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(cr + o)));
                _mm512_storeu_ps(y + o, _mm512_add_ps(_mm512_loadu_ps(y + o),
                                                      _mm512_permutexvar_ps(idx, tv)));
            }
        }
#elif defined(__AVX2__)
        if (kp == 16) { /* two 8-lane permutes and a blend serve 8 outputs */
            const __m256 lo = _mm256_loadu_ps(ti), hi = _mm256_loadu_ps(ti + 8);
            for (; o + 8 <= n_out; o += 8) {
                const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(cr + o)));
                const __m256 pick = _mm256_blendv_ps(
                    _mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                    _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
                _mm256_storeu_ps(y + o, _mm256_add_ps(_mm256_loadu_ps(y + o), pick));
            }
        }
#endif
        for (; o < n_out; o++) y[o] += ti[cr[o]];
    }
}

#if defined(__AVX512F__)
/* gather_row for 4 rows at once (K <= 16): each block of 16 codes is loaded and widened
   once for the 4 rows' tables (table + b * n_in * 16, b < 4), halving the code traffic. */
static void gather_rows4(const float *table, const uint8_t *codes, int64_t n_in,
                         int64_t n_out, float *y) {
    const int64_t stride = n_in * 16;
    memset(y, 0, (size_t)(4 * n_out) * sizeof(float));
    for (int64_t i = 0; i < n_in; i++) {
        const float *ti = table + i * 16;
        const uint8_t *cr = codes + i * n_out;
        const __m512 t0 = _mm512_loadu_ps(ti), t1 = _mm512_loadu_ps(ti + stride),
                     t2 = _mm512_loadu_ps(ti + 2 * stride), t3 = _mm512_loadu_ps(ti + 3 * stride);
        int64_t o = 0;
        for (; o + 16 <= n_out; o += 16) {
            const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(cr + o)));
            float *y0 = y + o, *y1 = y0 + n_out, *y2 = y1 + n_out, *y3 = y2 + n_out;
            _mm512_storeu_ps(y0, _mm512_add_ps(_mm512_loadu_ps(y0), _mm512_permutexvar_ps(idx, t0)));
            _mm512_storeu_ps(y1, _mm512_add_ps(_mm512_loadu_ps(y1), _mm512_permutexvar_ps(idx, t1)));
            _mm512_storeu_ps(y2, _mm512_add_ps(_mm512_loadu_ps(y2), _mm512_permutexvar_ps(idx, t2)));
            _mm512_storeu_ps(y3, _mm512_add_ps(_mm512_loadu_ps(y3), _mm512_permutexvar_ps(idx, t3)));
        }
        for (; o < n_out; o++) {
            const uint8_t c = cr[o];
            y[o] += ti[c];
            y[n_out + o] += ti[stride + c];
            y[2 * n_out + o] += ti[2 * stride + c];
            y[3 * n_out + o] += ti[3 * stride + c];
        }
    }
}
#endif

/* Dense B-spline layer features, (rows, n_in, L) with L = n_basis (+1 with the SiLU
   base column): zeros except each input's 4 window values - the layout that
   `bspline_features` builds with a scatter, written in one pass. */
int mc_bspline_features(const float *x, int64_t rows, int64_t n_in, const float *t0,
                        const float *inv_h, int64_t n_basis, int base, float *feats) {
    const int64_t n_cells = n_basis + 3, width = n_basis + (base ? 1 : 0);
    float *scratch = (float *)malloc((size_t)(6 * n_in) * sizeof(float));
    if (!scratch) return -1;
    float *v = scratch, *silu = v + 4 * n_in;
    int32_t *slot = (int32_t *)(silu + n_in);
    for (int64_t r = 0; r < rows; r++) {
        basis_row(x + r * n_in, t0, inv_h, n_in, (float)n_cells, slot, v, silu);
        float *out = feats + r * n_in * width;
        memset(out, 0, (size_t)(n_in * width) * sizeof(float));
        for (int64_t i = 0; i < n_in; i++) {
            float *o = out + i * width;
            const int64_t c = (int64_t)slot[i] - 1;
            if (c >= 3 && c < n_basis) { /* the whole window exists: one 16-byte store */
                const float w4[4] = {v[i], v[n_in + i], v[2 * n_in + i], v[3 * n_in + i]};
                memcpy(o + c - 3, w4, sizeof w4);
            } else if (c >= 0 && c < n_cells)
                for (int q = 0; q < 4; q++) {
                    const int64_t j = c - 3 + q;
                    if (j >= 0 && j < n_basis) o[j] = v[q * n_in + i];
                }
            if (base) o[n_basis] = silu[i];
        }
    }
    free(scratch);
    return 0;
}

/* Per input: its cell slot, its 4 window derivatives d/dx and SiLU'(x). */
static void dbasis_row(const float *restrict x, const float *restrict t0,
                       const float *restrict inv_h, int64_t n_in, float nc,
                       int32_t *restrict slot, float *restrict d, float *restrict dsilu) {
    float *restrict d0 = d, *restrict d1 = d + n_in, *restrict d2 = d + 2 * n_in,
                    *restrict d3 = d + 3 * n_in;
    for (int64_t i = 0; i < n_in; i++) {
        const float xi = x[i];
        float u = (xi - t0[i]) * inv_h[i];
        u = u != u ? nc : u;
        u = u < -1.0f ? -1.0f : (u > nc ? nc : u);
        const float cell = floorf(u);
        const float t = u - cell, s = 1.0f - t, t2 = t * t;
        slot[i] = (int32_t)cell + 1;
        const float a = -0.5f * (s * s), b = 1.5f * t2 - 2.0f * t, e = 0.5f * t2;
        d0[i] = a * inv_h[i];
        d1[i] = b * inv_h[i];
        d2[i] = -((a + b) + e) * inv_h[i];
        d3[i] = e * inv_h[i];
        const float sg = 1.0f / (1.0f + exp_poly(-xi));
        dsilu[i] = sg * (1.0f + xi * (1.0f - sg));
    }
}

/* d loss / d x of `mc_bspline_features`: grad_x[r, i] = sum over the window columns j
   of grad[r, i, j] * dB_j/dx + grad[r, i, n_basis] * SiLU'(x), recomputed from x
   (the arithmetic of `_window_rows(derivative=True)` and ACTIVATION_GRADS). */
int mc_bspline_features_grad(const float *x, int64_t rows, int64_t n_in, const float *t0,
                             const float *inv_h, int64_t n_basis, int base, const float *grad,
                             float *grad_x) {
    const int64_t n_cells = n_basis + 3, width = n_basis + (base ? 1 : 0);
    const float nc = (float)n_cells;
    float *scratch = (float *)malloc((size_t)(6 * n_in) * sizeof(float));
    if (!scratch) return -1;
    float *d = scratch, *dsilu = d + 4 * n_in;
    int32_t *slot = (int32_t *)(dsilu + n_in);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n_in, *g = grad + r * n_in * width;
        float *gx = grad_x + r * n_in;
        dbasis_row(xr, t0, inv_h, n_in, nc, slot, d, dsilu);
        for (int64_t i = 0; i < n_in; i++) {
            if (!isfinite(xr[i])) {
                const float sg = 1.0f / (1.0f + expf(-xr[i]));
                dsilu[i] = sg * (1.0f + xr[i] * (1.0f - sg));
            }
            const int64_t c = (int64_t)slot[i] - 1;
            const float *gi = g + i * width;
            float acc = 0.0f;
            if (c >= 3 && c < n_basis) { /* the whole window exists */
                acc = gi[c - 3] * d[i] + gi[c - 2] * d[n_in + i] + gi[c - 1] * d[2 * n_in + i] +
                      gi[c] * d[3 * n_in + i];
            } else if (c >= 0 && c < n_cells) {
                for (int q = 0; q < 4; q++) {
                    const int64_t j = c - 3 + q;
                    if (j >= 0 && j < n_basis) acc += gi[j] * d[q * n_in + i];
                }
            }
            gx[i] = base ? acc + gi[n_basis] * dsilu[i] : acc;
        }
    }
    free(scratch);
    return 0;
}

/* returns 0, or -1 when the scratch cannot be allocated */
int mc_bspline_codebook(const float *x, int64_t rows, int64_t n_in, const float *t0,
                        const float *inv_h, int64_t n_basis, int base, const float *ct,
                        int64_t kp, const uint8_t *codes, int64_t n_out, float *y) {
    const int64_t n_cells = n_basis + 3, slots = n_cells + 2;
    const size_t floats = (size_t)(4 * n_in * kp + slots * 4 * kp + 6 * n_in);
    float *scratch = (float *)calloc(floats, sizeof(float));
    if (!scratch) return -1;
    float *table = scratch, *win = table + 4 * n_in * kp, *v = win + slots * 4 * kp;
    float *silu = v + 4 * n_in;
    int32_t *slot = (int32_t *)(silu + n_in);
    for (int64_t sl = 1; sl <= n_cells; sl++)
        for (int r = 0; r < 4; r++) {
            const int64_t j = sl - 1 - 3 + r;
            if (j >= 0 && j < n_basis) memcpy(win + (sl * 4 + r) * kp, ct + j * kp, kp * sizeof(float));
        }
    const float *base_row = base ? ct + n_basis * kp : NULL;
    int64_t r = 0;
#if defined(__AVX512F__)
    if (kp == 16)
        for (; r + 4 <= rows; r += 4) {
            for (int64_t b = 0; b < 4; b++) {
                basis_row(x + (r + b) * n_in, t0, inv_h, n_in, (float)n_cells, slot, v, silu);
                project_row(slot, v, silu, n_in, win, base_row, kp, table + b * n_in * kp);
            }
            gather_rows4(table, codes, n_in, n_out, y + r * n_out);
        }
#endif
    for (; r < rows; r++) {
        basis_row(x + r * n_in, t0, inv_h, n_in, (float)n_cells, slot, v, silu);
        project_row(slot, v, silu, n_in, win, base_row, kp, table);
        gather_row(table, codes, n_in, n_out, kp, y + r * n_out);
    }
    free(scratch);
    return 0;
}
"""

_lock = threading.Lock()
_loaded: list[ctypes.CDLL | None] = []


def _cpu_key() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [
        line for line in info.splitlines() if line.startswith(("model name", "flags", "Features"))
    ]
    return "\n".join(sorted(set(keep)))


def cache_dir() -> Path:
    """`$METACLUSTER_NATIVE_CACHE`, else ~/.cache/metacluster/native when it can be
    created, else a per-user folder in the temporary directory (read-only homes)."""
    env = os.environ.get("METACLUSTER_NATIVE_CACHE")
    if env:
        return Path(env)
    home = Path.home() / ".cache" / "metacluster" / "native"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except (OSError, RuntimeError):
        pass
    user = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"metacluster-native-{user}"


def build(directory: Path | None = None, march: str = "native") -> Path | None:
    """The kernel library's path, compiling it (`-march=<march>`) when the cache lacks
    it; None when no C compiler is found or the build fails (logged)."""
    flags = (*FLAGS, f"-march={march}")
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        log.info("native kernel: no C compiler found; using the torch kernels")
        return None
    key = "\n".join([SOURCE, " ".join(flags), compiler, platform.machine(), _cpu_key()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    folder = directory or cache_dir()
    target = folder / f"mc_codebook_{digest}.so"
    if target.exists():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src = Path(tmp) / "mc_codebook.c"
            src.write_text(SOURCE)
            out = Path(tmp) / target.name
            subprocess.run(
                [compiler, *flags, str(src), "-o", str(out), "-lm"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(out, target)  # atomic: concurrent builders agree
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log.warning("native kernel: build failed (%s) %s", exc, detail.decode(errors="replace"))
        return None
    return target


def _load() -> ctypes.CDLL | None:
    if os.environ.get("METACLUSTER_NATIVE", "1") == "0":
        return None
    path = build(march=os.environ.get("METACLUSTER_NATIVE_MARCH", "native"))
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        fn = lib.mc_bspline_codebook
    except (OSError, AttributeError) as exc:
        log.warning("native kernel: cannot load %s (%s)", path, exc)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, ptr, ptr, i64, ctypes.c_int, ptr, i64, ptr, i64, ptr]
    fn.restype = ctypes.c_int
    lib.mc_bspline_features.argtypes = [ptr, i64, i64, ptr, ptr, i64, ctypes.c_int, ptr]
    lib.mc_bspline_features.restype = ctypes.c_int
    grad = lib.mc_bspline_features_grad
    grad.argtypes = [ptr, i64, i64, ptr, ptr, i64, ctypes.c_int, ptr, ptr]
    grad.restype = ctypes.c_int
    return lib


def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library (built at the first call), or None: use torch."""
    with _lock:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def reset() -> None:
    """Forget the loaded library (tests: the next `kernel()` call decides afresh)."""
    with _lock:
        _loaded.clear()


def bspline_codebook(
    lib: ctypes.CDLL,
    x: Tensor,
    t0: Tensor,
    inv_h: Tensor,
    n_basis: int,
    silu: bool,
    centroids_t: Tensor,
    codes_t: Tensor,
) -> Tensor:
    """y (R, O) of one uniform cubic B-spline codebook layer.

    x (R, I) fp32 contiguous; t0, inv_h (I,) fp32; centroids_t (L, kp) fp32 with kp = 16
    (K <= 16, zero-padded) or K; codes_t (I, O) uint8 contiguous, every code < K.
    """
    rows, n_in = x.shape
    n_out = codes_t.shape[1]
    y = torch.empty(rows, n_out, dtype=torch.float32)
    if rows == 0:
        return y
    status = lib.mc_bspline_codebook(
        x.data_ptr(),
        rows,
        n_in,
        t0.data_ptr(),
        inv_h.data_ptr(),
        n_basis,
        int(silu),
        centroids_t.data_ptr(),
        centroids_t.shape[1],
        codes_t.data_ptr(),
        n_out,
        y.data_ptr(),
    )
    if status != 0:
        raise MemoryError("native codebook kernel: cannot allocate its scratch table")
    return y


def bspline_features(
    lib: ctypes.CDLL, x: Tensor, t0: Tensor, inv_h: Tensor, n_basis: int, silu: bool
) -> Tensor:
    """(R, I) fp32 contiguous -> (R, I, n_basis [+ 1]) cubic B-spline features on
    uniform knots t0 + j / inv_h ((I,) fp32 each), the SiLU base column last."""
    rows, n_in = x.shape
    out = torch.empty(rows, n_in, n_basis + int(silu), dtype=torch.float32)
    if rows and lib.mc_bspline_features(
        x.data_ptr(),
        rows,
        n_in,
        t0.data_ptr(),
        inv_h.data_ptr(),
        n_basis,
        int(silu),
        out.data_ptr(),
    ):
        raise MemoryError("native B-spline features: cannot allocate scratch")
    return out


def bspline_features_grad(
    lib: ctypes.CDLL,
    x: Tensor,
    t0: Tensor,
    inv_h: Tensor,
    n_basis: int,
    silu: bool,
    grad: Tensor,
) -> Tensor:
    """d loss / d x (R, I) of `bspline_features` for grad (R, I, L) fp32 contiguous."""
    rows, n_in = x.shape
    out = torch.empty(rows, n_in, dtype=torch.float32)
    if rows and lib.mc_bspline_features_grad(
        x.data_ptr(),
        rows,
        n_in,
        t0.data_ptr(),
        inv_h.data_ptr(),
        n_basis,
        int(silu),
        grad.data_ptr(),
        out.data_ptr(),
    ):
        raise MemoryError("native B-spline feature gradient: cannot allocate scratch")
    return out


__all__ = [
    "FLAGS",
    "SOURCE",
    "bspline_codebook",
    "bspline_features",
    "bspline_features_grad",
    "build",
    "cache_dir",
    "kernel",
    "reset",
]
