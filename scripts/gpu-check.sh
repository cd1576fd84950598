#!/usr/bin/env bash
# The prepared GPU check: one command, at most ~9 minutes, on a machine with one NVIDIA GPU, its
# driver, Python with PyTorch (CUDA build), and no Rust toolchain, FFmpeg or network. It runs the
# binary built here by scripts/build-gpu-check.sh and carried along in .gpu-check/, and prints one
# table at the end:
#   1. parity over ../shared/fixtures and fixtures/ on CUDA, in f32 and in bf16 (bf16 held to the
#      documented BF16_TOLERANCE of wan_pipeline::parity);
#   2. the 1.3B DiT forward at 832x480 x 81 frames (32,760 tokens), bf16, random weights made here
#      with PyTorch: ours with fused (flash) attention and with the chunked path, against
#      diffusers with PyTorch's SDPA, seconds per forward and the ratio;
#   3. the peak GPU memory of a whole 1.3B text-to-video job at that size, text encoder included
#      (nvidia-smi polled every 100 ms, and the driver's free memory sampled by the job itself).
#
# What it needs there, and how it gets there (see scripts/gpu-check.md):
#   .gpu-check/bin/wan-gpu-check[.xz]  built here: scripts/build-gpu-check.sh (CUDA 13.0, sm 80/90)
#   .gpu-check/wheels/                 diffusers and the pure-Python packages it needs, installed
#                                      with --no-index only if `import diffusers` fails there
#   the CUDA libraries                 libcublas/libcublasLt/libcurand/libnvrtc .so.13 from the
#                                      PyTorch install (site-packages/nvidia/**/lib), found below
# Call through the device tool with carry [".gpu-check"], e.g.
#   run(command="bash scripts/gpu-check.sh", carry=[".gpu-check"], timeout_s=600)
# Settings: GPU_CHECK_BUDGET_S (default 540: every stage gets what is left of it),
# GPU_CHECK_DEVICE (default cuda), GPU_CHECK_SIZE (default 832x480x81), GPU_CHECK_RUNS (3).
# A dry run on a CPU machine: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 GPU_CHECK_SIZE=64x48x9
# (toy-sized models, only the plumbing).
set -uo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-540}
deadline=$((started + budget))
device=${GPU_CHECK_DEVICE:-cuda}
size=${GPU_CHECK_SIZE:-832x480x81}
runs=${GPU_CHECK_RUNS:-3}
py=${PYTHON:-python3}
IFS=x read -r width height frames <<<"$size"
out=${OUT:-$(mktemp -d)}
log="$out/gpu-check.log"
work=${GPU_CHECK_WORK:-/tmp/wan-gpu-check}
mkdir -p "$work" "$out"
: >"$log"

say() { echo "$*" | tee -a "$log"; }

# Runs one stage with at most `cap` seconds and never past the deadline (minus 20 s for the
# table); its output goes to the log and to $work/<name>.out.
stage() {
  local name=$1 cap=$2
  shift 2
  local left=$((deadline - $(date +%s) - 20))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -le 5 ]; then
    say "== $name: skipped (no time left)"
    echo "skipped" >"$work/$name.status"
    return 0
  fi
  say "== $name (limit ${limit} s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.out" 2>&1
  local rc=$?
  cat "$work/$name.out" >>"$log"
  tail -n 5 "$work/$name.out"
  say "== $name: rc=$rc in $(( $(date +%s) - t0 )) s"
  echo "$rc" >"$work/$name.status"
}

# The value of key=value from a stage's output ("-" when absent).
val() { grep -o "$2=[^ ]*" "$work/$1.out" 2>/dev/null | tail -n 1 | cut -d= -f2 || true; }
or_dash() { if [ -n "$1" ]; then echo "$1"; else echo "-"; fi; }

say "gpu-check: $(date -u +%FT%TZ) device=$device size=$size runs=$runs budget=${budget}s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"

# The binary (carried compressed when it is large).
bin="$work/wan-gpu-check"
if [ -f .gpu-check/bin/wan-gpu-check.xz ]; then
  xz -dc .gpu-check/bin/wan-gpu-check.xz >"$bin" 2>/dev/null \
    || "$py" -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' .gpu-check/bin/wan-gpu-check.xz >"$bin"
elif [ -f .gpu-check/bin/wan-gpu-check ]; then
  cp .gpu-check/bin/wan-gpu-check "$bin"
else
  say "gpu-check: no .gpu-check/bin/wan-gpu-check: build it with scripts/build-gpu-check.sh and carry .gpu-check"
  exit 2
fi
chmod +x "$bin"

# The CUDA libraries the binary links (sonames .13) from the PyTorch install.
libs=$("$py" - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = set()
for r in roots:
    for pattern in ("nvidia/*/lib", "nvidia/cu*/lib", "torch/lib"):
        dirs.update(d for d in glob.glob(os.path.join(r, pattern)) if os.path.isdir(d))
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$bin" 2>/dev/null | grep "not found" || true)
[ -n "$missing" ] && say "gpu-check: libraries not found: $missing"

fixtures=()
for d in "${WAN_FIXTURES:-../shared/fixtures}" shared/fixtures fixtures; do
  [ -d "$d" ] && fixtures+=("$d")
done

# 1. Parity in f32 and bf16.
stage parity_f32 120 "$bin" --device "$device" --dtype f32 parity "${fixtures[@]}"
stage parity_bf16 120 "$bin" --device "$device" --dtype bf16 parity "${fixtures[@]}"

# 2. The random-weight 1.3B pipeline, then the three forwards on its transformer.
# diffusers and its pure-Python dependencies from the carried wheels, each without its own
# dependencies (numpy and the rest come from the machine's PyTorch install).
if ! "$py" -c "import diffusers" 2>/dev/null; then
  stage pip_diffusers 60 "$py" -m pip install -q --no-index --no-deps --target "$work/py" .gpu-check/wheels/*.whl
  export PYTHONPATH="$work/py${PYTHONPATH:+:$PYTHONPATH}"
fi
tiny=""
for d in "${fixtures[@]}"; do
  [ -d "$d/../models/wan-tiny-t2v" ] && { tiny="$d/../models/wan-tiny-t2v"; break; }
done
model="$work/wan13b"
stage make_models 180 "$py" scripts/gpu_check/make_models.py "$model" "${tiny:-../shared/models/wan-tiny-t2v}"
stage torch_forward 120 "$py" scripts/gpu_check/torch_forward.py "$model/transformer" "$width" "$height" "$frames" "$runs"
stage ours_fused 120 "$bin" --device "$device" --dtype bf16 forward --transformer "$model/transformer" \
  --width "$width" --height "$height" --frames "$frames" --runs "$runs" --attention fused
stage ours_chunked 150 "$bin" --device "$device" --dtype bf16 forward --transformer "$model/transformer" \
  --width "$width" --height "$height" --frames "$frames" --runs "$runs" --attention chunked

# 3. A whole job, its GPU memory polled from outside.
poll="$work/nvidia-smi.csv"
: >"$poll"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$poll" 2>/dev/null &
  poller=$!
fi
stage job 240 "$bin" --device "$device" --dtype bf16 job --model "$model" --width "$width" --height "$height" --frames "$frames" --steps 2
[ -n "${poller:-}" ] && kill "$poller" 2>/dev/null
smi_peak=$(sort -n "$poll" 2>/dev/null | tail -n 1)

# The table.
ratio() { "$py" -c "import sys; a,b=sys.argv[1:]; print(f'{float(a)/float(b):.2f}x')" "$1" "$2" 2>/dev/null || echo "-"; }
torch_s=$(val torch_forward torch_forward_median_s)
fused_s=$(val ours_fused forward_median_s)
chunked_s=$(val ours_chunked forward_median_s)
{
  echo
  echo "| check | ours | reference | ratio / verdict |"
  echo "|---|---|---|---|"
  for d in f32 bf16; do
    echo "| parity $d ($(cat "$work/parity_$d.status" 2>/dev/null)) | $(or_dash "$(val parity_$d parity_passed)") passed, $(or_dash "$(val parity_$d parity_failed)") failed, $(or_dash "$(val parity_$d parity_skipped)") skipped | max err $(or_dash "$(val parity_$d parity_max_abs_err)") | $([ "$(cat "$work/parity_$d.status" 2>/dev/null)" = 0 ] && echo pass || echo FAIL) |"
  done
  echo "| DiT forward ${size}, bf16, $(or_dash "$(val ours_fused forward_tokens)") tokens: fused attention | $(or_dash "$fused_s") s | diffusers SDPA $(or_dash "$torch_s") s | $(ratio "$fused_s" "$torch_s") (goal <= 0.80x) |"
  echo "| DiT forward, chunked attention | $(or_dash "$chunked_s") s | diffusers SDPA $(or_dash "$torch_s") s | $(ratio "$chunked_s" "$torch_s") |"
  echo "| diffusers forward peak allocated | - | $(or_dash "$(val torch_forward torch_forward_peak_gib)") GiB | - |"
  echo "| whole t2v job ${size}, 2 steps: peak GPU memory (nvidia-smi) | $(or_dash "$smi_peak") MiB | official Wan2.1 on RTX 4090: 8.2 GB | goal <= 8.2 GB |"
  echo "| job: sampled peak / estimate / weights | $(or_dash "$(val job job_sampled_peak_mib)") / $(or_dash "$(val job job_estimate_mib)") / $(or_dash "$(val job job_weights_mib)") MiB | - | - |"
  echo "| job stages: load / text / steps / decode | $(or_dash "$(val job job_load_s)") / $(or_dash "$(val job job_text_s)") / $(or_dash "$(val job job_steps_s)") / $(or_dash "$(val job job_decode_s)") s | - | $(or_dash "$(val job job_frames)") frames |"
  echo
  echo "gpu-check: done in $(( $(date +%s) - started )) s; log at $log"
} | tee -a "$log"
