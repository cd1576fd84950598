#!/usr/bin/env bash
# Installs the system packages wan-server builds and tests against (Debian bookworm).
#   scripts/install-deps.sh          FFmpeg dev libraries, clang, pkg-config, ffmpeg/ffprobe,
#                                    curl and wrk (scripts/bench-server.sh)
#   scripts/install-deps.sh --cuda   also the CUDA toolkit (contrib/non-free) and g++-11 for nvcc
# Idempotent: packages already present are not fetched again.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

want_cuda=0
for a in "$@"; do [ "$a" = "--cuda" ] && want_cuda=1; done

base_pkgs=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev
           libswscale-dev libavfilter-dev libavdevice-dev libswresample-dev ffmpeg curl wrk)
cuda_pkgs=(nvidia-cuda-toolkit g++-11)

missing() {
  local out=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p"); done
  echo "${out[@]:-}"
}

if [ "$want_cuda" = 1 ]; then
  # nvidia-cuda-toolkit lives in Debian's contrib/non-free components.
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q "non-free" "$src"; then
    $SUDO sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' "$src"
  fi
fi

todo="$(missing "${base_pkgs[@]}")"
if [ "$want_cuda" = 1 ]; then todo="$todo $(missing "${cuda_pkgs[@]}")"; fi
todo="$(echo $todo)"
if [ -n "$todo" ]; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $todo
fi
echo "install-deps: system packages ready"
