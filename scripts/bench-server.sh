#!/usr/bin/env bash
# Server benchmarks (issue 8), on 127.0.0.1 only, every load bounded in time:
#  1. job-status GET throughput and p99 against /health of the same server, in the same run
#     (goal: at least 0.7x of /health's throughput);
#  2. 429 latency while the admission limit is full (and a check that the answers are 429s);
#  3. a 1 GiB upload: throughput and the server's peak RSS growth (goal: under 64 MiB).
# Needs wrk and curl (scripts/install-deps.sh installs both). Prints one line per figure and
# whether each goal is met; figures are noisy on a shared machine, so a missed goal is reported,
# not fatal. It fails only when the server misbehaves (no start, no 429, upload refused).
# BENCH_SECONDS sets each wrk run's length (default 5), BENCH_PORT the port (default 18089).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-server: wrk is needed (scripts/install-deps.sh installs it)" >&2; exit 1; }
# The same build as `cargo test --release --workspace` (scripts/test.sh): a different package
# selection would unify features differently and rebuild the whole dependency tree.
cargo test --release --workspace --no-run -q
bin="$PWD/target/release/wan-server"
work="$(mktemp -d)"
port="${BENCH_PORT:-18089}"
base="http://127.0.0.1:$port"
duration="${BENCH_SECONDS:-5}"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" init-demo-model "$work/models/demo" >/dev/null
"$bin" serve --host 127.0.0.1 --port "$port" --models-dir "$work/models" --model demo \
  --data-dir "$work/data" --hub-cache-dir "$work/hub" --max-concurrent-requests 2 --min-steps 1 \
  --max-video-bytes 2147483648 --log-format json >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf --max-time 2 "$base/health" >/dev/null && break; sleep 0.2; done
curl -sf --max-time 2 "$base/health" >/dev/null || { echo "bench-server: server did not become healthy" >&2; cat "$work/server.log" >&2; exit 1; }

submit() {  # $1 = steps; prints the job id
  curl -s --max-time 10 -X POST "$base/api/v1/generate/text-to-video" -H "Content-Type: application/json" \
    -d "{\"prompt\":\"bench\",\"num_frames\":9,\"width\":64,\"height\":48,\"num_inference_steps\":$1}" \
    | sed -E 's/.*"job_id":"([^"]+)".*/\1/'
}
goal() {  # $1 = 1 when met
  if [ "$1" = 1 ]; then echo "goal met"; else echo "goal NOT met"; fi
}
job="$(submit 1)"

# wrk's summary: requests/s and the 99th percentile latency (--latency). Prints "rps p99".
measure() {  # $1 = url, rest = extra wrk args
  local url="$1"; shift
  local out
  out="$(timeout $((duration + 30)) wrk -t1 -c16 -d"${duration}s" --timeout 5s --latency "$@" "$url")"
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1 == "99%" {print $2}')"
}
read -r health_rps health_p99 <<<"$(measure "$base/health")"
read -r job_rps job_p99 <<<"$(measure "$base/api/v1/job/$job")"
echo "bench GET /health: ${health_rps} req/s, p99 ${health_p99}"
echo "bench GET /api/v1/job/{id}: ${job_rps} req/s, p99 ${job_p99}"
ratio_ok="$(awk -v a="$job_rps" -v b="$health_rps" 'BEGIN { print (a / b >= 0.7) ? 1 : 0 }')"
awk -v a="$job_rps" -v b="$health_rps" -v g="$(goal "$ratio_ok")" \
  'BEGIN { printf "bench job-status vs health: ratio %.2f (goal >= 0.70: %s)\n", a / b, g }'

# Fill the limit with two long jobs, then flood the generation route: every answer is a 429.
submit 100 >/dev/null; submit 100 >/dev/null
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":"flood","num_frames":9,"width":64,"height":48,"num_inference_steps":1}'
LUA
read -r flood_rps flood_p99 <<<"$(measure "$base/api/v1/generate/text-to-video" -s "$work/post.lua")"
code="$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST "$base/api/v1/generate/text-to-video" -H 'Content-Type: application/json' -d '{"prompt":"x"}')"
echo "bench POST generate at the limit: ${flood_rps} req/s, p99 ${flood_p99} (answer: $code)"
[ "$code" = 429 ] || { echo "bench-server: expected 429 at the limit, got $code" >&2; exit 1; }
curl -s --max-time 10 -X DELETE "$base/api/v1/queue" >/dev/null || true

# A 1 GiB upload (a real mp4, then padding) through the storage route.
rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }
ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=8 -frames:v 9 -pix_fmt yuv420p "$work/head.mp4"
cp "$work/head.mp4" "$work/big.mp4"; truncate -s 1G "$work/big.mp4"
before="$(rss_kib)"
start="$(date +%s.%N)"
ucode="$(curl -s --max-time 300 -o "$work/upload.json" -w '%{http_code}' -F "file=@$work/big.mp4" "$base/api/v1/storage/upload")"
end="$(date +%s.%N)"
after="$(rss_kib)"
rss_ok="$(awk -v b="$before" -v a="$after" 'BEGIN { print ((a - b) / 1024 < 64) ? 1 : 0 }')"
awk -v s="$start" -v e="$end" -v b="$before" -v a="$after" -v c="$ucode" -v g="$(goal "$rss_ok")" 'BEGIN {
  printf "bench 1GiB upload: status %s, %.0f MiB/s, peak RSS %.1f -> %.1f MiB (growth %.1f MiB, goal < 64: %s)\n",
    c, 1024 / (e - s), b / 1024, a / 1024, (a - b) / 1024, g }'
[ "$ucode" = 201 ] || { echo "bench-server: the 1 GiB upload was refused: $(cat "$work/upload.json")" >&2; exit 1; }
