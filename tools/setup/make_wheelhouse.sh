#!/usr/bin/env bash
# Usage: bash tools/setup/make_wheelhouse.sh DIR [PYTHON] [--with-torch]
# Prepares, on a machine with network, a folder of wheels from which
# tools/setup/setup_env.sh installs eva_mm's stack on a machine without network:
#   EVA_MM_WHEELHOUSE=DIR [EVA_MM_SYSTEM_TORCH=1] PYTHON=python3.12 make setup
# PYTHON is an interpreter of the target's Python version (default python3.12,
# the lent H200's); the target must be Linux x86-64 as this machine. Without
# --with-torch the target brings its own torch and torchvision
# (EVA_MM_SYSTEM_TORCH=1) and none of torch's own packages (torch, torchvision,
# triton, nvidia-*) are fetched. mmcv comes as its source archive and is built
# there (with the CUDA kernels when the target has a GPU); mmaction2 as its
# original wheel, which the set-up patches.
set -euo pipefail
DIR=${1:?usage: make_wheelhouse.sh DIR [PYTHON] [--with-torch]}
PYTHON=${2:-python3.12}
WITH_TORCH=${3:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

reqs=(-r "$ROOT/requirements/build.txt" -r "$ROOT/requirements/runtime.txt"
      -r "$ROOT/requirements/tests.txt" addict packaging pyyaml yapf
      mmaction2==1.2.0)
[ "$WITH_TORCH" = --with-torch ] && reqs+=(-r "$ROOT/requirements/torch.txt")
# Old setup.py files import pkg_resources, which setuptools 81 removed (and
# pip's isolated builds would install): their metadata and wheels are built in
# a scratch venv of the target's Python with an older setuptools, without
# isolation.
"$PYTHON" -m venv "$work/build-venv"
build_py="$work/build-venv/bin/python"
"$build_py" -m pip install --quiet 'setuptools<81' wheel
# Resolve the whole tree for the target's Python, then fetch exactly that list;
# sdists (e.g. deepspeed) are built into wheels here so the target builds
# nothing but mmcv.
"$build_py" -m pip install --quiet --dry-run --ignore-installed --no-build-isolation \
    --report "$work/report.json" "${reqs[@]}"
"$build_py" - "$work/report.json" "$WITH_TORCH" > "$work/pinned.txt" <<'PYEOF'
import json, re, sys
report, with_torch = json.load(open(sys.argv[1])), sys.argv[2] == '--with-torch'
torch_own = re.compile(r'^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$')
for item in report['install']:
    name, version = item['metadata']['name'], item['metadata']['version']
    if with_torch or not torch_own.match(name.lower()):
        print(f'{name}=={version}')
PYEOF
"$build_py" -m pip wheel --quiet --no-deps --no-build-isolation \
    -w "$DIR" -r "$work/pinned.txt"
# The build tools that pip's isolated builds on the target need.
"$PYTHON" -m pip download --quiet --no-deps -d "$DIR" 'setuptools<81' wheel
"$build_py" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$DIR" mmcv==2.1.0
echo "Wheelhouse for $("$PYTHON" --version): $(ls "$DIR" | wc -l) files," \
     "$(du -sh "$DIR" | cut -f1) in $DIR"
