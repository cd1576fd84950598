#!/usr/bin/env bash
# Installs the system packages wan-server builds and tests against (Debian bookworm).
#   scripts/install-deps.sh          FFmpeg dev libraries, clang, pkg-config, ffmpeg/ffprobe,
#                                    curl and wrk (scripts/bench-server.sh)
#   scripts/install-deps.sh --cuda   also a CUDA 13.0 toolkit from NVIDIA's PyPI wheels, in a venv
#                                    outside the repository (${WAN_CUDA_VENV:-~/.cache/wan-server/cuda-venv}),
#                                    laid out as a CUDA root ($WAN_CUDA_VENV/cuda-root) with a
#                                    link-time libcuda stub, and an env file to source
#                                    ($WAN_CUDA_VENV/cuda-env.sh). Needs python3 with venv/pip and gcc.
# Idempotent: packages already present are not fetched again; the wheels are reinstalled only when
# the pinned list below changes.
#
# Why wheels at CUDA 13.0, not Debian's 11.8 (1.6 GB, 14 min) nor the -cu12 12.9 wheels: the
# nvidia-cuda-nvcc-cu12 wheels (12.6 to 12.9) carry only ptxas, no nvcc; the unsuffixed 13.x ones
# carry nvcc, cicc and the headers. 13.0 is the version the GPU machine's driver (580) implements:
# candle's kernels ship as PTX that the driver JIT-compiles, and a driver rejects PTX from a newer
# toolkit than its own; cudarc 0.19.10 also knows CUDA versions only up to 13.4 (the newest wheel is
# 13.5). gcc 12 is a supported host compiler for nvcc 13.0, so no g++-11.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

want_cuda=0
for a in "$@"; do [ "$a" = "--cuda" ] && want_cuda=1; done

base_pkgs=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev
           libswscale-dev libavfilter-dev libavdevice-dev libswresample-dev ffmpeg curl wrk)
# The CUDA 13.0 wheels (a consistent set: nvcc needs nvvm/crt/runtime, CUTLASS needs cccl).
cuda_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
             nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85
             nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35)

missing() {
  local out=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p"); done
  echo "${out[@]:-}"
}

todo="$(missing "${base_pkgs[@]}")"
if [ "$want_cuda" = 1 ] && ! python3 -m venv --help >/dev/null 2>&1; then todo="$todo python3-venv"; fi
todo="$(echo $todo)"
if [ -n "$todo" ]; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $todo
fi
echo "install-deps: system packages ready"

if [ "$want_cuda" = 1 ]; then
  venv="${WAN_CUDA_VENV:-$HOME/.cache/wan-server/cuda-venv}"
  stamp="$venv/.wan-cuda-wheels"
  if [ ! -x "$venv/bin/pip" ]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "${cuda_wheels[*]}" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check "${cuda_wheels[@]}"
    echo "${cuda_wheels[*]}" > "$stamp"
  fi
  cu="$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
  [ -x "$cu/bin/nvcc" ] || { echo "install-deps: no nvcc in $cu" >&2; exit 1; }

  # The wheels already put bin/, include/, nvvm/ and lib/ under one nvidia/cu13 directory, but the
  # libraries only under their sonames (libcublas.so.13): the linker wants libcublas.so, and
  # cudarc/cudaforge look for lib64/ under $CUDA_ROOT. So a CUDA root of links, rebuilt only when
  # the wheels change (a build running meanwhile keeps its paths).
  root="$venv/cuda-root"
  if [ "$(cat "$root/.wan-cuda-wheels" 2>/dev/null)" != "$cu ${cuda_wheels[*]}" ]; then
    rm -rf "$root.tmp"
    mkdir -p "$root.tmp/lib64/stubs"
    for d in bin include nvvm; do ln -s "$cu/$d" "$root.tmp/$d"; done
    for f in "$cu"/lib/*.so.* "$cu"/lib/*.a; do
      [ -e "$f" ] || continue
      b="$(basename "$f")"
      ln -s "$f" "$root.tmp/lib64/$b"
      case "$b" in *.so.*) ln -sf "$f" "$root.tmp/lib64/${b%%.so.*}.so" ;; esac
    done
    # libcuda comes with the driver, not the toolkit (no GPU here): cudarc links it by name
    # (`dynamic-linking`), so link against a stub with the driver's soname that defines every driver
    # entry point cuda.h declares (plain, legacy and per-thread-stream names). At run time the real
    # libcuda.so.1 is found; the stub dir is never on LD_LIBRARY_PATH.
    for defs in "" "-D__CUDA_API_VERSION_INTERNAL" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM"; do
      gcc -E -P $defs -I"$cu/include" -x c "$cu/include/cuda.h"
    done | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u \
      | awk '{ print "int " $1 "(void) { return 999; }" }' > "$root.tmp/lib64/stubs/cuda_stub.c"
    gcc -shared -fPIC -o "$root.tmp/lib64/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 \
      "$root.tmp/lib64/stubs/cuda_stub.c"
    echo "$cu ${cuda_wheels[*]}" > "$root.tmp/.wan-cuda-wheels"
    rm -rf "$root"
    mv "$root.tmp" "$root"
  fi

  cat > "$venv/cuda-env.sh.tmp" <<ENV
# Written by scripts/install-deps.sh --cuda: the CUDA toolkit from the wheels in $venv.
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export PATH="$root/bin:\$PATH"
export LD_LIBRARY_PATH="$root/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
  mv "$venv/cuda-env.sh.tmp" "$venv/cuda-env.sh"
  echo "install-deps: CUDA $("$cu/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p') ready (source $venv/cuda-env.sh)"
fi
