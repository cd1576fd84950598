#!/usr/bin/env bash
# End-to-end benchmark: one whole text-to-video job of ours (`wan-server generate`) against
# diffusers' WanPipeline, on the same model directory and the same machine, on the CPU.
#
# What it measures, per run: total wall time from process start to the mp4 written (model load,
# text encoding, the denoising steps with classifier-free guidance, VAE decode, mp4 encode),
# and peak RSS (/usr/bin/time -v; without it, getrusage of a Python parent). The stage times
# are those each side prints as key=value lines: diffusers_job.py always; ours when `generate`
# prints text_encode_s= / steps_s= / vae_decode_s= / encode_mp4_s= on stderr.
# The job: 320x192, 9 frames, 4 steps, guidance 5, the same seed and prompt for every run.
# dtypes: on a CPU with avx512_bf16 everything in bf16 but the VAE (f32); otherwise the text
# encoder bf16 and the DiT and VAE f32 (BENCH_E2E_DTYPE / BENCH_E2E_TE_DTYPE override them).
# Each round runs, one at a time: ours (native kernels), ours with WAN_KERNELS=generic (the
# generic kernel path), then diffusers. At the end: one table of medians over the rounds, the
# ratios ours/diffusers for total time and peak RSS, the CPU and its AVX-512/AVX2 flags, and
# whether the goals are met (ours' total time <= 0.6x diffusers', ours' peak RSS <= diffusers').
#
# Run (the model is created on first use: ~14.7 GB of disk, a few minutes):
#   scripts/bench-e2e.sh
#   BENCH_E2E_ROUNDS=3 WAN_SERVER=target/release/wan-server scripts/bench-e2e.sh
# Quick check of the script itself (tiny model of the same structure, seconds per run):
#   BENCH_E2E_SMALL=1 BENCH_E2E_ROUNDS=1 scripts/bench-e2e.sh
#
# Environment:
#   BENCH_E2E_MODEL   model directory (default ~/.cache/wan-server/bench/wan21-t2v-1.3b-random,
#                     or ~/.cache/wan-server/bench/wan21-t2v-small-random with BENCH_E2E_SMALL=1);
#                     made with scripts/bench_e2e/make_pipeline.py [--small] when it is missing
#   BENCH_E2E_SMALL=1 the small model (same structure, tiny sizes) for testing this script
#   BENCH_E2E_ROUNDS  rounds (default 2)
#   BENCH_E2E_SEED    seed (default 42); BENCH_E2E_PROMPT the prompt
#   BENCH_E2E_NO_TE_DTYPE=1  do not pass --text-encoder-dtype to ours (binaries without it)
#   BENCH_E2E_WARM=0  do not read the model's files into the page cache before each run
#   BENCH_E2E_TIMEOUT per-run limit in seconds (default 3600)
#   BENCH_E2E_OUT     where logs, videos and results.tsv go (default a new /tmp/bench-e2e.XXXXXX)
#   BENCH_E2E_STRICT=1  exit 1 when a goal is missed
#   WAN_SERVER        our binary (default target/release/wan-server; not built by this script)
#   PYTHON            a Python with torch, diffusers, transformers, safetensors, sentencepiece,
#                     imageio, imageio-ffmpeg (default /tmp/refenv/bin/python if present, else
#                     ~/.cache/wan-server/bench-venv/bin/python, created with pip when missing)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HELPERS="$ROOT/scripts/bench_e2e"

say() { echo "bench-e2e: $*" >&2; }
die() { say "$*"; exit 1; }

ROUNDS="${BENCH_E2E_ROUNDS:-2}"
SEED="${BENCH_E2E_SEED:-42}"
PROMPT="${BENCH_E2E_PROMPT:-A red fox running through fresh snow, cinematic lighting}"
SMALL="${BENCH_E2E_SMALL:-0}"
TIMEOUT="${BENCH_E2E_TIMEOUT:-3600}"
WIDTH=320 HEIGHT=192 FRAMES=9 STEPS=4 GUIDANCE=5 FPS=16
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_E2E_ROUNDS must be a positive integer, got '$ROUNDS'"

WAN_SERVER="${WAN_SERVER:-$ROOT/target/release/wan-server}"
[ -x "$WAN_SERVER" ] || die "no binary at $WAN_SERVER (cargo build --release, or set WAN_SERVER)"
WAN_SERVER="$(cd "$(dirname "$WAN_SERVER")" && pwd)/$(basename "$WAN_SERVER")"

# --- Python ------------------------------------------------------------------------------------
BENCH_VENV="$HOME/.cache/wan-server/bench-venv"
PY_IMPORTS="import torch, diffusers, transformers, safetensors, sentencepiece, imageio, imageio_ffmpeg"
PY_PACKAGES=(diffusers==0.42.1 transformers accelerate safetensors sentencepiece imageio imageio-ffmpeg)
if [ -z "${PYTHON:-}" ]; then
  if [ -x /tmp/refenv/bin/python ]; then PYTHON=/tmp/refenv/bin/python; else PYTHON="$BENCH_VENV/bin/python"; fi
fi
if [ "$PYTHON" = "$BENCH_VENV/bin/python" ] && ! "$PYTHON" -c "$PY_IMPORTS" 2>/dev/null; then
  say "setting up $BENCH_VENV (torch CPU wheel, diffusers 0.42.1, ...)"
  [ -x "$PYTHON" ] || python3 -m venv "$BENCH_VENV"
  "$PYTHON" -m pip install -q --upgrade pip
  # The CPU wheel where download.pytorch.org answers; PyPI's (CUDA-enabled, larger) otherwise.
  "$PYTHON" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
    || "$PYTHON" -m pip install -q torch
  "$PYTHON" -m pip install -q "${PY_PACKAGES[@]}"
fi
"$PYTHON" -c "$PY_IMPORTS" 2>/dev/null \
  || die "$PYTHON lacks some of torch diffusers transformers safetensors sentencepiece imageio imageio-ffmpeg: $PYTHON -m pip install ${PY_PACKAGES[*]}"

# --- CPU and dtypes ----------------------------------------------------------------------------
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')"
CPU_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512)' | sort -u | tr '\n' ' ' | sed 's/ $//')"
[ -n "$CPU_FLAGS" ] || CPU_FLAGS="(no AVX2/AVX-512)"
if grep -qw avx512_bf16 /proc/cpuinfo; then DEFAULT_DTYPE=bf16; else DEFAULT_DTYPE=f32; fi
DTYPE="${BENCH_E2E_DTYPE:-$DEFAULT_DTYPE}"
TE_DTYPE="${BENCH_E2E_TE_DTYPE:-bf16}"
NCPU="$(nproc)"

# --- the model ---------------------------------------------------------------------------------
if [ "$SMALL" = 1 ]; then
  MODEL="${BENCH_E2E_MODEL:-$HOME/.cache/wan-server/bench/wan21-t2v-small-random}"
  MAKE_ARGS=(--small)
else
  MODEL="${BENCH_E2E_MODEL:-$HOME/.cache/wan-server/bench/wan21-t2v-1.3b-random}"
  MAKE_ARGS=()
fi
if [ ! -f "$MODEL/model_index.json" ]; then
  parent="$(dirname "$MODEL")"
  mkdir -p "$parent"
  if [ "$SMALL" != 1 ]; then
    need=$((16 * 1024 * 1024 * 1024))
    avail="$(df --output=avail -B1 "$parent" | tail -1 | tr -d ' ')"
    [ "$avail" -ge "$need" ] || die "making $MODEL needs ~16 GiB free in $parent, $((avail >> 30)) GiB there"
  fi
  template="$ROOT/../shared/models/wan-tiny-t2v"
  tmp_template=""
  if [ ! -f "$template/tokenizer/tokenizer.json" ]; then
    # Our demo model carries the same tokenizer, scheduler config and model_index.json.
    tmp_template="$(mktemp -d)"
    "$WAN_SERVER" init-demo-model "$tmp_template/demo" >/dev/null
    template="$tmp_template/demo"
  fi
  say "making $MODEL (random weights; template $template)"
  rm -rf "$MODEL.partial"
  "$PYTHON" "$HELPERS/make_pipeline.py" "$MODEL.partial" "${MAKE_ARGS[@]}" --template "$template" >&2
  mv "$MODEL.partial" "$MODEL"
  [ -z "$tmp_template" ] || rm -rf "$tmp_template"
fi
MODEL="$(cd "$MODEL" && pwd)"

# --- measuring one run -------------------------------------------------------------------------
OUT="${BENCH_E2E_OUT:-$(mktemp -d /tmp/bench-e2e.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"
if /usr/bin/time -v true >/dev/null 2>&1; then HAVE_TIME=1; else HAVE_TIME=0; fi
STAGE_RE='\b(load_s|text_encode_s|steps_s|vae_decode_s|encode_mp4_s)=[0-9][0-9.eE+-]*'

warm_cache() {
  [ "${BENCH_E2E_WARM:-1}" = 1 ] || return 0
  find "$MODEL" -name '*.safetensors' -exec cat {} + >/dev/null
}

# measure TIMEFILE CMD...: runs CMD under a timeout, writes its peak RSS (kB) to TIMEFILE in
# /usr/bin/time -v's words.
measure() {
  local tf=$1; shift
  if [ "$HAVE_TIME" = 1 ]; then
    /usr/bin/time -v -o "$tf" timeout "$TIMEOUT" "$@"
  else
    "$PYTHON" -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write("Maximum resident set size (kbytes): %d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)' "$tf" timeout "$TIMEOUT" "$@"
  fi
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# run_one NAME ROUND CMD...: one job; records status, total_s, peak_rss_mib and the stage lines.
run_one() {
  local name=$1 round=$2; shift 2
  local log="$OUT/$name.r$round" rc=0 t0 t1 wall rss_kb frames
  warm_cache
  say "round $round: $name"
  { printf '  $'; printf ' %q' "$@"; echo; } >&2
  t0=$(date +%s.%N)
  measure "$log.time" "$@" >"$log.stdout" 2>"$log.stderr" || rc=$?
  t1=$(date +%s.%N)
  if [ "$rc" != 0 ] || [ ! -s "$log.mp4" ]; then
    say "$name (round $round) failed with status $rc; the end of its output ($log.stderr):"
    tail -n 15 "$log.stderr" | sed 's/^/    /' >&2
    tail -n 5 "$log.stdout" | sed 's/^/    /' >&2
    record "$name" "$round" status FAIL
    return 0
  fi
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p' "$log.time")
  record "$name" "$round" status ok
  record "$name" "$round" total_s "$wall"
  [ -z "$rss_kb" ] || record "$name" "$round" peak_rss_mib "$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')"
  local stages
  stages=$(cat "$log.stdout" "$log.stderr" | tr '\r' '\n' | grep -ohE "$STAGE_RE" \
    | awk -F= '{ v[$1] = $2 } END { for (k in v) printf "%s\t%s\n", k, v[k] }' | sort || true)
  while IFS=$'\t' read -r k v; do
    if [ -n "$k" ]; then record "$name" "$round" "$k" "$v"; fi
  done <<<"$stages"
  if command -v ffprobe >/dev/null; then
    frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$log.mp4" 2>/dev/null || true)
    [ "$frames" = "$FRAMES" ] || say "warning: $log.mp4 has '$frames' frames, expected $FRAMES"
  fi
  say "  total_s=$wall peak_rss_mib=$(awk -v k="${rss_kb:-0}" 'BEGIN { printf "%.0f", k / 1024 }') $(echo "$stages" | tr '\t\n' '= ')"
}

ours_cmd() {  # OUTFILE
  local cmd=("$WAN_SERVER" generate --model "$MODEL" --prompt "$PROMPT" --frames "$FRAMES" --fps "$FPS"
    --width "$WIDTH" --height "$HEIGHT" --steps "$STEPS" --guidance "$GUIDANCE" --seed "$SEED"
    --dtype "$DTYPE" --vae-dtype f32)
  [ "${BENCH_E2E_NO_TE_DTYPE:-0}" = 1 ] || cmd+=(--text-encoder-dtype "$TE_DTYPE")
  cmd+=(--device cpu --out "$1")
  printf '%s\0' "${cmd[@]}"
}

say "model $MODEL; ours $WAN_SERVER; python $PYTHON; results in $OUT"
say "CPU $CPU_MODEL ($NCPU CPUs; $CPU_FLAGS); DiT $DTYPE, text encoder $TE_DTYPE, VAE f32"
for round in $(seq 1 "$ROUNDS"); do
  mapfile -d '' cmd < <(ours_cmd "$OUT/ours.r$round.mp4")
  run_one ours "$round" env -u WAN_KERNELS "${cmd[@]}"
  mapfile -d '' cmd < <(ours_cmd "$OUT/ours-generic.r$round.mp4")
  run_one ours-generic "$round" env WAN_KERNELS=generic "${cmd[@]}"
  run_one diffusers "$round" "$PYTHON" "$HELPERS/diffusers_job.py" --model "$MODEL" --prompt "$PROMPT" \
    --width "$WIDTH" --height "$HEIGHT" --frames "$FRAMES" --fps "$FPS" --steps "$STEPS" --guidance "$GUIDANCE" \
    --seed "$SEED" --text-encoder-dtype "$TE_DTYPE" --dtype "$DTYPE" --threads "$NCPU" --out "$OUT/diffusers.r$round.mp4"
done

strict=()
[ "${BENCH_E2E_STRICT:-0}" != 1 ] || strict=(--strict)
rc=0
"$PYTHON" "$HELPERS/summarize.py" "$RESULTS" --cpu "$CPU_MODEL ($NCPU CPUs)" --flags "$CPU_FLAGS" \
  --dtypes "text encoder $TE_DTYPE, DiT $DTYPE, VAE f32 (--dtype $DTYPE$([ "${BENCH_E2E_NO_TE_DTYPE:-0}" = 1 ] && echo ", ours without --text-encoder-dtype: its text encoder in --dtype"))" \
  --model "$MODEL" "${strict[@]}" | tee "$OUT/summary.txt" || rc=${PIPESTATUS[0]}
say "logs, videos and results.tsv in $OUT"
exit "$rc"
