#!/usr/bin/env bash
# Issue #3 (GPU part) in one device call: the fused-attention correctness check, then the
# GPT-2-small training step under the new and the previous attention code, then bench_model.
#     OUT=/some/dir bash benchmarks/gpu_session3.sh        (logs land in $OUT)
set -u
OUT=${OUT:-/tmp/gpu_session3}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# one compilation per step function across the scripts below (bench_model compiles its step twice)
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
       JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
PY=${PY:-python3}
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/session.log"; }
stamp start
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.log"
stamp check
timeout 150 $PY benchmarks/gpu_check.py 2>&1 | tee "$OUT/check.log"
stamp "variants B=16, 24"
timeout 300 $PY benchmarks/gpu_step_variants.py --batch 16 24 2>&1 | tee "$OUT/variants.log"
stamp "bench_model B=24"
timeout 180 $PY benchmarks/bench_model.py --gpu --attention fused --batch 24 2>&1 | tee "$OUT/b24.log"
stamp "bench_model B=16"
timeout 180 $PY benchmarks/bench_model.py --gpu --attention fused --batch 16 2>&1 | tee "$OUT/b16.log"
stamp "scatter-backward variant B=16"
timeout 120 $PY benchmarks/gpu_step_variants.py --batch 16 --variants real-first real-first-scatter 2>&1 \
  | tee "$OUT/scatter.log"
stamp done
