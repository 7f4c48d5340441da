#!/usr/bin/env bash
# GPU check of the compression engine: the digits and one eq: benchmark row on CUDA with
# faiss-gpu; writes the "compression_gpu" section of benchmarks/RESULTS.md beside the CPU one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False); nothing to check." >&2
    exit 2
fi
if ! "$PY" -c 'import sys, faiss; sys.exit(0 if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 else 1)'; then
    echo "gpu_check: faiss has no GPU support here; install the gpu extra (pip install 'metacluster[gpu]')." >&2
    exit 3
fi
"$PY" - <<'PYEOF'
import sys
import time
sys.path.insert(0, ".")
import benchmarks.compression as bench
from benchmarks._results import write_section

rows = [r for r in bench.FULL_ROWS if r.data in ("digits", "eq:exp_mean_sin_sq_100d") and r.family == "bspline"]
orig = bench.MetaClusterConfig
class CudaConfig(orig):  # every compression in the rows runs with device="cuda"
    def __init__(self, **kw):
        kw["device"] = "cuda"
        super().__init__(**kw)
bench.MetaClusterConfig = CudaConfig
t0 = time.perf_counter()
results = []
for row in rows:
    results.extend(bench.run_row(row, bench.FULL_KS, seed=0))
import torch
head = (f"Compression on CUDA ({torch.cuda.get_device_name(0)}, faiss-gpu), seed 0, "
        f"{(time.perf_counter() - t0) / 60:.1f} min; same columns as the CPU table.\n\n")
write_section("compression_gpu", head + bench.table(results))
print("gpu_check: wrote the compression_gpu section of benchmarks/RESULTS.md")
PYEOF
