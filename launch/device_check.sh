#!/usr/bin/env bash
# The device check on a lent NVIDIA GPU (one H200: <= 8 minutes), as one command:
#   bash launch/device_check.sh [OUT_DIR] [--sections=decode,tree_search,train_step,pretrain]
# OUT_DIR defaults to $OUT (the device tool's folder that comes back) or runs/device_check. Writes there:
# device.md and device.json (python -m tsp_jax.bench.device: decode roofline, tree search vs HF generate, the 7B
# train step's MFU, the small-model pre-training step GPU vs CPU), log.txt (everything printed) and gpu.csv
# (nvidia-smi). Uses the machine's own python3 with its jax (CUDA), flax, optax, orbax, torch and transformers;
# nothing is installed and nothing needs carrying (the check imports no grain, ml_collections, bandit, semgrep or
# tensorboardX). Sections are rewritten into device.json as they finish, so a run cut short keeps its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/device_check}}
shift || true
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
# JAX takes this share of GPU memory up front; the rest is torch's (HF generate at 7B needs ~25 GB of it).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.75}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT_DIR/gpu.csv" 2>&1 || true
"$PY" -m tsp_jax.bench.device --out="$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/log.txt"
