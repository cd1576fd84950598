#!/usr/bin/env bash
# Builds wan-server with the `cuda` feature against Debian's CUDA toolkit, in its own target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --cuda
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export NVCC_CCBIN="${NVCC_CCBIN:-g++-11}"
export CUDA_ROOT="${CUDA_ROOT:-/usr}"
cargo build --release --features cuda -p wan-server --target-dir target/cuda
echo "build-cuda: ok"
