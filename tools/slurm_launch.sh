#!/usr/bin/env bash
# Usage: bash tools/slurm_launch.sh SCRIPT PARTITION JOB_NAME [SCRIPT args...]
# Runs tools/SCRIPT under srun, one task per GPU, with --launcher slurm (mmengine
# reads the rank, world size and master address from Slurm's variables).
# Environment: GPUS (tasks in all, default 8), GPUS_PER_NODE (default 8, at most
# GPUS), CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options, e.g. "-w node1"),
# PYTHON (default: the checkout's .venv/bin/python if there is one, else
# python).
set -euo pipefail
SCRIPT=$1
PARTITION=$2
JOB_NAME=$3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/default_python.sh
source "$ROOT/tools/default_python.sh"
positive() {
    if ! [[ ${!1} =~ ^[1-9][0-9]*$ ]]; then
        echo "slurm: $1 must be a positive integer, got '${!1}'." >&2
        exit 2
    fi
}
GPUS=${GPUS:-8}
positive GPUS
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
positive GPUS_PER_NODE
positive CPUS_PER_TASK
if (( GPUS % GPUS_PER_NODE != 0 )); then
    echo "slurm: GPUS=$GPUS is not a multiple of GPUS_PER_NODE=$GPUS_PER_NODE;" \
         "every node runs GPUS_PER_NODE tasks." >&2
    exit 2
fi
# shellcheck disable=SC2086  # SRUN_ARGS holds several options on purpose.
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "$PYTHON" -u "$ROOT/tools/$SCRIPT" "${@:4}" --launcher slurm
