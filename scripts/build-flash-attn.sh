#!/usr/bin/env bash
# Builds wan-pipeline with the `flash-attn` feature (candle-flash-attn, vendored in
# third_party/candle-flash-attn) in the CUDA build's target dir (target/cuda, so that
# candle-kernels' PTX is shared with scripts/build-cuda.sh), and times it.
# Needs what scripts/build-cuda.sh needs (the CUDA 13.0 wheels venv from
# `scripts/install-deps.sh --cuda`, gcc, cargo, PyPI on the first run), plus the `nvidia-cutlass`
# 4.2.0.0 wheel, installed here into the same venv for its C++ headers
# (cutlass_library/source/include/{cutlass,cute}): upstream's build clones CUTLASS from GitHub.
#
# Compiled kernels are cached in ${CANDLE_FLASH_ATTN_BUILD_DIR:-~/.cache/wan-server/flash-attn-build}
# (outside target/, so a clean target dir does not recompile them). GPU architectures:
# ${CANDLE_FLASH_ATTN_CUDA_ARCHS:-80,90}, SASS for each and PTX for the last: sm_80 SASS runs on
# Ampere 80/86 and Ada 89 (same major version), sm_90 SASS on Hopper 90 (H100/H200), the compute_90
# PTX is JIT-compiled on anything newer. Head dim 128 only (every Wan model's); see the vendored
# crate's README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --cuda
venv="${WAN_CUDA_VENV:-$HOME/.cache/wan-server/cuda-venv}"
# shellcheck source=/dev/null
source "$venv/cuda-env.sh"

# Only the headers are wanted: --no-deps skips its Python dependencies (cuda-python, scipy, ...).
cutlass_wheel="nvidia-cutlass==4.2.0.0"
if [ "$(cat "$venv/.wan-cutlass-wheel" 2>/dev/null)" != "$cutlass_wheel" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$cutlass_wheel"
  echo "$cutlass_wheel" > "$venv/.wan-cutlass-wheel"
fi
CUTLASS_INCLUDE_DIR="$("$venv/bin/python" -c 'import os, cutlass_library; print(os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include"))')"
export CUTLASS_INCLUDE_DIR
[ -f "$CUTLASS_INCLUDE_DIR/cutlass/cutlass.h" ] || { echo "build-flash-attn: no CUTLASS headers in $CUTLASS_INCLUDE_DIR" >&2; exit 1; }

export CANDLE_FLASH_ATTN_BUILD_DIR="${CANDLE_FLASH_ATTN_BUILD_DIR:-$HOME/.cache/wan-server/flash-attn-build}"
export CANDLE_FLASH_ATTN_CUDA_ARCHS="${CANDLE_FLASH_ATTN_CUDA_ARCHS:-80,90}"
# candle-kernels' PTX (see scripts/build-cuda.sh): compute_80, JIT-compiled for 80 and newer.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# cudaforge runs nvcc on half the cores by default; the kernels are the whole cost here.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
mkdir -p "$CANDLE_FLASH_ATTN_BUILD_DIR"
# What a later build with the feature needs (scripts/build-gpu-check.sh sources it).
cat > "$venv/flash-env.sh" <<ENV
export CUTLASS_INCLUDE_DIR="$CUTLASS_INCLUDE_DIR"
export CANDLE_FLASH_ATTN_BUILD_DIR="$CANDLE_FLASH_ATTN_BUILD_DIR"
export CANDLE_FLASH_ATTN_CUDA_ARCHS="$CANDLE_FLASH_ATTN_CUDA_ARCHS"
export CUDAFORGE_THREADS="$CUDAFORGE_THREADS"
ENV

cuda_version="$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
echo "build-flash-attn: CUDA $cuda_version, CUTLASS from $CUTLASS_INCLUDE_DIR, archs $CANDLE_FLASH_ATTN_CUDA_ARCHS, kernels cached in $CANDLE_FLASH_ATTN_BUILD_DIR"
start=$(date +%s)
cargo build --release --features flash-attn -p wan-pipeline --target-dir target/cuda
echo "build-flash-attn: cargo build took $(( $(date +%s) - start )) s"
echo "build-flash-attn: ok (CUDA $cuda_version, flash-attn SASS for sm_${CANDLE_FLASH_ATTN_CUDA_ARCHS//,/ sm_} + PTX for the last; head dim 128)"
