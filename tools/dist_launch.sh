#!/usr/bin/env bash
# Usage: bash tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT args...]
# Starts NUM_PROCS copies of tools/SCRIPT with torch.distributed.run: one per
# GPU (nccl) or, without GPUs, CPU processes (gloo). Multi-node: set NNODES,
# NODE_RANK, MASTER_ADDR and PORT on every node. PYTHON: the interpreter
# (default: the checkout's .venv/bin/python if there is one, else python).
set -euo pipefail
SCRIPT=$1
NPROCS=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/default_python.sh
source "$ROOT/tools/default_python.sh"

PYTHONPATH="$ROOT:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROCS" \
    "$ROOT/tools/$SCRIPT" "${@:3}" --launcher pytorch
