#!/usr/bin/env bash
# Builds the mmcv 2.1.0 wheel (compiled ops) for the torch installed in the venv
# and leaves it in the cache folder given as $1. The registry has no mmcv 2.1.0
# wheel for current torch/Python, and the sdist needs two build-time fixes:
#   * torch >= 2.13 headers need C++20, but setup.py hard-codes -std=c++17;
#   * setup.py imports pkg_resources, so setuptools < 81 and no build isolation.
# Set EVA_MM_MMCV_CUDA=1 on a machine with nvcc to compile the CUDA kernels too.
set -euo pipefail

out_dir=$1
py=${PYTHON:-python}
version=2.1.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$py" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$version" -d "$work"
tar -xzf "$work/mmcv-$version.tar.gz" -C "$work"
src="$work/mmcv-$version"
sed -i 's/-std=c++17/-std=c++20/g; s#/std:c++17#/std:c++20#g' "$src/setup.py"

echo "Building mmcv $version with compiled ops (about 12 minutes on 2 CPU cores)..."
MMCV_WITH_OPS=1 FORCE_CUDA=${EVA_MM_MMCV_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$py" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src"
mkdir -p "$out_dir"
mv "$work"/dist/mmcv-*.whl "$out_dir/"
