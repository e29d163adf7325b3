#!/usr/bin/env bash
# Sets up .venv/ in the checkout with the pinned stack (requirements/*.txt).
# Idempotent: a stamp keyed by the requirement files and the set-up scripts
# makes a second run a no-op, and the mmcv wheel it has to build is cached
# under $EVA_MM_CACHE (default ~/.cache/eva_mm), keyed by torch version.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV="$ROOT/.venv"
CACHE=${EVA_MM_CACHE:-$HOME/.cache/eva_mm}
PY_BASE=${PYTHON:-python3.11}
PY="$VENV/bin/python"
cd "$ROOT"

stamp_key=$(cat requirements/*.txt tools/setup/*.sh tools/setup/*.py pyproject.toml \
    | sha256sum | cut -c1-16)
stamp="$VENV/.eva_mm-setup-$stamp_key"
if [ -f "$stamp" ]; then
    echo "[setup] .venv is up to date."
    exit 0
fi

log() { echo "[setup $(date +%H:%M:%S)] $*"; }
[ -x "$PY" ] || { log "creating .venv with $PY_BASE"; "$PY_BASE" -m venv "$VENV"; }
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

log "torch + torchvision"
pip install --quiet -r requirements/torch.txt
log "build tools"
pip install --quiet -r requirements/build.txt

torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
wheels="$CACHE/wheels/torch-$torch_version"
if ! "$PY" -c 'import mmcv, mmcv.ops' 2>/dev/null; then
    if ! ls "$wheels"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        log "mmcv 2.1.0: building the wheel once for torch $torch_version"
        PYTHON="$PY" bash tools/setup/build_mmcv.sh "$wheels"
    fi
    log "mmcv 2.1.0 from $wheels"
    pip install --quiet --no-deps "$wheels"/mmcv-2.1.0-*.whl
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
