#!/usr/bin/env bash
# Builds wan-server with the `cuda` feature, in its own target dir (target/cuda), against the CUDA
# 13.0 toolkit from NVIDIA's PyPI wheels that `scripts/install-deps.sh --cuda` puts in a venv
# outside the repository (${WAN_CUDA_VENV:-~/.cache/wan-server/cuda-venv}; reruns reuse it).
# Needs: python3 with venv and pip, gcc (nvcc's host compiler; gcc 12 is supported), cargo, and
# PyPI reachable on the first run. No GPU: the compute capability is given, not detected.
#
# Compute capabilities: candle-kernels 0.11.1 compiles its .cu files (through cudaforge) to PTX
# for ONE architecture, `-gencode=arch=compute_$CUDA_COMPUTE_CAP,code=sm_$CUDA_COMPUTE_CAP --ptx`,
# and cudarc loads that PTX at run time, where the driver JIT-compiles it for the GPU at hand.
# PTX runs on its own and every later architecture, so the default 80 covers Ampere 80/86, Ada 89,
# Hopper 90 and Blackwell. Its few static kernels (libmoe.a: the GGUF/MoE quantized matmuls, which
# Wan does not use) are SASS for sm_80 only, which runs on 8.x (80/86/89) but not on 9.0+.
# Setting CUDA_COMPUTE_CAP=90 would make cudaforge target compute_90a, whose PTX runs on 9.0 alone.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --cuda
venv="${WAN_CUDA_VENV:-$HOME/.cache/wan-server/cuda-venv}"
# shellcheck source=/dev/null
source "$venv/cuda-env.sh"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
cuda_version="$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"

case "$CUDA_COMPUTE_CAP" in
  80) caps="PTX compute_80, JIT-compiled by the driver for 80, 86, 89, 90 and newer; libmoe.a SASS sm_80 (8.x only)" ;;
  8[0-9]) caps="PTX compute_$CUDA_COMPUTE_CAP, JIT for $CUDA_COMPUTE_CAP and newer (not for older 8.x)" ;;
  *) caps="PTX compute_${CUDA_COMPUTE_CAP}a (cudaforge adds 'a' from 90 up): runs on $CUDA_COMPUTE_CAP only" ;;
esac

start=$(date +%s)
cargo build --release --features cuda -p wan-server --target-dir target/cuda
echo "build-cuda: cargo build took $(( $(date +%s) - start )) s"
echo "build-cuda: ok (CUDA $cuda_version, compute capabilities: $caps)"
