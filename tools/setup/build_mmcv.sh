#!/usr/bin/env bash
# Builds the mmcv 2.1.0 wheel (compiled ops) for the torch installed in the venv
# and leaves it in the cache folder given as $1. The registry has no mmcv 2.1.0
# wheel for current torch/Python, and the sdist needs two build-time fixes:
#   * torch >= 2.13 headers need C++20, but setup.py hard-codes -std=c++17;
#   * setup.py imports pkg_resources, so setuptools < 81 and no build isolation.
# EVA_MM_MMCV_CUDA=1 compiles the CUDA kernels too, for TORCH_CUDA_ARCH_LIST
# (e.g. "9.0"; required), also on a machine without a GPU (docs/gpu.md).
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

cuda=${EVA_MM_MMCV_CUDA:-0}
if [ "$cuda" = 1 ]; then
    if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
        echo "EVA_MM_MMCV_CUDA=1 needs TORCH_CUDA_ARCH_LIST, e.g. 9.0 for H100/H200" \
             "or '8.0;9.0' for A100 and H100." >&2
        exit 2
    fi
    # torch finds CUDA through the first nvcc on PATH; a wrapper such as
    # /usr/local/bin/nvcc then points it at /usr/local, which has neither the
    # runtime headers nor libcudart. Use the toolkit that nvcc belongs to.
    if [ -z "${CUDA_HOME:-}" ]; then
        for candidate in /usr/local/cuda "$(dirname "$(dirname "$(command -v nvcc)")")"; do
            if [ -f "$candidate/include/cuda_runtime_api.h" ]; then
                CUDA_HOME=$candidate
                break
            fi
        done
    fi
    if [ ! -f "${CUDA_HOME:-}/include/cuda_runtime_api.h" ]; then
        echo "No CUDA toolkit with include/cuda_runtime_api.h found (looked at" \
             "/usr/local/cuda and beside nvcc); set CUDA_HOME to the toolkit." >&2
        exit 2
    fi
    export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
    # A compiler-only toolkit lacks the math libraries' headers that torch's
    # ATen/cuda headers include (cusparse.h, cublas_v2.h, ...); torch's pip
    # wheels bring them in site-packages/nvidia/*/include. Only the headers the
    # toolkit lacks are added: the wheels' cuda_runtime_api.h would shadow the
    # toolkit's and miss crt/host_defines.h.
    extra_inc="$work/cuda-extra-include"
    extra_lib="$work/cuda-extra-lib"
    mkdir -p "$extra_inc" "$extra_lib"
    nvidia_dir=$("$py" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)
    for header in "$nvidia_dir"/nvidia/*/include/{cusparse,cublas,cusolver,curand,cufft,nvJitLink}*.h; do
        [ -f "$header" ] || continue
        name=$(basename "$header")
        [ -e "$CUDA_HOME/include/$name" ] || ln -sf "$header" "$extra_inc/$name"
    done
    # Same for the runtime library the extension links against.
    if [ ! -e "$CUDA_HOME/lib64/libcudart.so" ]; then
        for lib in "$nvidia_dir"/nvidia/*/lib/libcudart.so.*; do
            [ -f "$lib" ] && ln -sf "$lib" "$extra_lib/libcudart.so" && break
        done
    fi
    export CPATH="$extra_inc:$CUDA_HOME/include${CPATH:+:$CPATH}"
    export LIBRARY_PATH="$extra_lib:$CUDA_HOME/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
    echo "Building mmcv $version with CPU and CUDA ops for sm $TORCH_CUDA_ARCH_LIST" \
         "(CUDA_HOME=$CUDA_HOME; about 35 minutes on 2 CPU cores)..."
else
    echo "Building mmcv $version with compiled ops (about 12 minutes on 2 CPU cores)..."
fi
MMCV_WITH_OPS=1 FORCE_CUDA=$cuda MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$py" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src"
mkdir -p "$out_dir"
mv "$work"/dist/mmcv-*.whl "$out_dir/"
