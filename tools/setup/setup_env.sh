#!/usr/bin/env bash
# Sets up .venv/ in the checkout with the pinned stack (requirements/*.txt).
# Idempotent: a stamp keyed by the requirement files, the set-up scripts and the
# mmcv build (CPU, or CUDA and its architectures) makes a second run a no-op, and
# the mmcv wheel it has to build is cached under $EVA_MM_CACHE (default
# ~/.cache/eva_mm), keyed by torch version (plus CUDA version and architectures
# for a CUDA build). See docs/gpu.md for the GPU options:
#   EVA_MM_MMCV_CUDA       1: build mmcv's CUDA kernels (needs nvcc; without a
#                          GPU set TORCH_CUDA_ARCH_LIST, e.g. 9.0); 0: CPU only;
#                          unset: CUDA kernels when nvidia-smi sees a GPU.
#   EVA_MM_SYSTEM_TORCH=1  build the venv on the machine's own torch
#                          (--system-site-packages; torch >= 2.11).
#   EVA_MM_WHEELHOUSE=DIR  install offline from DIR (tools/setup/make_wheelhouse.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV="$ROOT/.venv"
CACHE=${EVA_MM_CACHE:-$HOME/.cache/eva_mm}
PY_BASE=${PYTHON:-python3.11}
PY="$VENV/bin/python"
cd "$ROOT"

# Which mmcv: CPU ops only, or CUDA kernels for these architectures.
cuda=${EVA_MM_MMCV_CUDA:-}
if [ -z "$cuda" ]; then
    cuda=0
    if command -v nvidia-smi >/dev/null 2>&1 \
            && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        cuda=1
    fi
fi
if [ "$cuda" = 1 ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    # The compute capabilities of the visible GPUs, e.g. "9.0" or "8.0;9.0".
    TORCH_CUDA_ARCH_LIST=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
        | sort -u | paste -sd';' -)
    if [ -z "$TORCH_CUDA_ARCH_LIST" ]; then
        echo "[setup] EVA_MM_MMCV_CUDA=1 but no GPU is visible: set" \
             "TORCH_CUDA_ARCH_LIST (e.g. 9.0) to cross-compile." >&2
        exit 2
    fi
fi
export TORCH_CUDA_ARCH_LIST
mmcv_build=cpu
[ "$cuda" = 1 ] && mmcv_build="cuda-sm$(echo "$TORCH_CUDA_ARCH_LIST" | tr -d '.' | tr ';, ' '---')"

stamp_key=$( (cat requirements/*.txt tools/setup/*.sh tools/setup/*.py pyproject.toml;
              echo "$mmcv_build ${EVA_MM_SYSTEM_TORCH:-0}") | sha256sum | cut -c1-16)
stamp="$VENV/.eva_mm-setup-$stamp_key"
if [ -f "$stamp" ]; then
    echo "[setup] .venv is up to date."
    exit 0
fi

log() { echo "[setup $(date +%H:%M:%S)] $*"; }
if [ -n "${EVA_MM_WHEELHOUSE:-}" ]; then
    # Every pip call below, and those of the mmcv/mmaction2 build scripts,
    # reads only the wheelhouse.
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=$(cd "$EVA_MM_WHEELHOUSE" && pwd)
    log "offline install from $PIP_FIND_LINKS"
fi
venv_args=()
[ "${EVA_MM_SYSTEM_TORCH:-0}" = 1 ] && venv_args=(--system-site-packages)
[ -x "$PY" ] || { log "creating .venv with $PY_BASE ${venv_args[*]}"; "$PY_BASE" -m venv "${venv_args[@]}" "$VENV"; }
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

if [ "${EVA_MM_SYSTEM_TORCH:-0}" = 1 ]; then
    if ! "$PY" - <<'PYEOF'
import sys
import torch, torchvision
major, minor = (int(p) for p in torch.__version__.split('.')[:2])
sys.exit(0 if (major, minor) >= (2, 11) else 1)
PYEOF
    then
        echo "[setup] EVA_MM_SYSTEM_TORCH=1 needs the machine's python ($PY_BASE) to" \
             "import torch >= 2.11 and torchvision; it does not." >&2
        exit 2
    fi
    log "torch $("$PY" -c 'import torch; print(torch.__version__)') from the system"
else
    log "torch + torchvision"
    pip install --quiet -r requirements/torch.txt
fi
log "build tools"
pip install --quiet -r requirements/build.txt

torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
wheels="$CACHE/wheels/torch-$torch_version"
mmcv_wheels=$wheels
if [ "$cuda" = 1 ]; then
    cuda_version=$("$PY" -c 'import torch; print(torch.version.cuda or "")')
    if [ -z "$cuda_version" ]; then
        echo "[setup] mmcv CUDA kernels need a CUDA build of torch; torch" \
             "$torch_version is CPU-only." >&2
        exit 2
    fi
    # A CUDA build never shares a folder with the CPU one.
    mmcv_wheels="$wheels-cuda$cuda_version-${mmcv_build#cuda-}"
fi
# The installed mmcv must be the build asked for (CPU or CUDA + arches).
mmcv_marker="$VENV/.eva_mm-mmcv-$mmcv_build"
if ! { [ -f "$mmcv_marker" ] || [ "$mmcv_build" = cpu ]; } \
        || ! "$PY" -c 'import mmcv, mmcv.ops' 2>/dev/null; then
    if ! ls "$mmcv_wheels"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        if ls "${PIP_FIND_LINKS:-/nonexistent}"/mmcv-2.1.0-*.whl >/dev/null 2>&1 \
                && [ "$mmcv_build" = cpu ]; then
            mmcv_wheels=$PIP_FIND_LINKS
        else
            log "mmcv 2.1.0: building the wheel once for torch $torch_version ($mmcv_build)"
            PYTHON="$PY" EVA_MM_MMCV_CUDA=$cuda bash tools/setup/build_mmcv.sh "$mmcv_wheels"
        fi
    fi
    log "mmcv 2.1.0 from $mmcv_wheels"
    pip install --quiet --no-deps --force-reinstall "$mmcv_wheels"/mmcv-2.1.0-*.whl
    rm -f "$VENV"/.eva_mm-mmcv-*
    touch "$mmcv_marker"
fi

if ! ls "$wheels"/mmaction2-1.2.0+evamm-*.whl >/dev/null 2>&1; then
    log "mmaction2 1.2.0: rebuilding the wheel without its missing DRN import"
    "$PY" tools/setup/patch_mmaction2.py "$wheels"
fi
pip install --quiet --no-deps "$wheels"/mmaction2-1.2.0+evamm-*.whl

log "OpenMMLab stack, timm, open_clip, deepspeed, test tools"
pip install --quiet -r requirements/runtime.txt -r requirements/tests.txt
# mmcv's own dependencies (installed --no-deps above; opencv comes with mmengine).
pip install --quiet addict packaging pyyaml yapf
log "eva_mm (editable)"
pip install --quiet --no-deps --no-build-isolation -e .

"$PY" - <<'PYEOF'
import mmcv, mmcv.ops, mmdet, mmseg, mmpretrain, mmaction.models, mmengine
import eva_mm
print(f'[setup] ok: mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '
      f'mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'mmengine {mmengine.__version__}')
PYEOF
rm -f "$VENV"/.eva_mm-setup-*
touch "$stamp"
