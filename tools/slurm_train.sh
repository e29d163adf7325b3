#!/usr/bin/env bash
# Usage: [GPUS=16] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py args...]
# See tools/slurm_launch.sh for GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS.
if [ $# -lt 4 ]; then
    echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py args...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/slurm_launch.sh" train.py "$1" "$2" "$3" --work-dir "$4" "${@:5}"
