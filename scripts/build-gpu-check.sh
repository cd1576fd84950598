#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on the GPU machine, in .gpu-check/ (git-ignored; pass
# it as the device tool's carry, 64 MiB at most):
#   .gpu-check/bin/wan-gpu-check.xz  the check binary with `cuda` (and `flash-attn` unless
#                                    GPU_CHECK_FLASH=0), built against the CUDA 13.0 wheels of
#                                    scripts/install-deps.sh --cuda, without FFmpeg, stripped
#   .gpu-check/wheels/               diffusers 0.42.1 and its pure-Python dependencies for
#                                    CPython 3.12 (numpy, torch and what PyTorch brings are not
#                                    carried: the GPU machine's PyTorch has them)
# Needs what scripts/build-cuda.sh needs, and PyPI for the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --cuda
venv="${WAN_CUDA_VENV:-$HOME/.cache/wan-server/cuda-venv}"
# shellcheck source=/dev/null
source "$venv/cuda-env.sh"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
features="cuda"
if [ "${GPU_CHECK_FLASH:-1}" = 1 ]; then
  features="cuda,flash-attn"
  # CUTLASS's headers and the kernel cache, set up (and the kernels compiled) by build-flash-attn.sh.
  [ -f "$venv/flash-env.sh" ] || bash scripts/build-flash-attn.sh
  # shellcheck source=/dev/null
  source "$venv/flash-env.sh"
fi
start=$(date +%s)
cargo build --release -p wan-gpu-check --features "$features" --target-dir target/cuda
echo "build-gpu-check: cargo build ($features) took $(( $(date +%s) - start )) s"

mkdir -p .gpu-check/bin .gpu-check/wheels
strip -o .gpu-check/bin/wan-gpu-check target/cuda/release/wan-gpu-check
xz -T0 -6 -f .gpu-check/bin/wan-gpu-check
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -d .gpu-check/wheels diffusers==0.42.1
# The GPU machine's PyTorch brings these; carrying them would only eat the 64 MiB.
rm -f .gpu-check/wheels/numpy-* .gpu-check/wheels/torch-* .gpu-check/wheels/nvidia_* .gpu-check/wheels/triton-*
du -sh .gpu-check/bin .gpu-check/wheels
echo "build-gpu-check: ok; carry [\".gpu-check\"] and run: bash scripts/gpu-check.sh"
