#!/usr/bin/env bash
# Server benchmarks (issue 8), on 127.0.0.1 only, every load bounded in time:
#  1. job-status GET throughput and p99 against /health of the same server, in the same run;
#  2. 429 latency while the admission limit is full;
#  3. a 1 GiB upload: throughput and the server's peak RSS growth.
# Needs wrk (apt-get install wrk) and curl. Prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-server: wrk is needed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p wan-server
bin="$PWD/target/release/wan-server"
work="$(mktemp -d)"
port="${BENCH_PORT:-18089}"
base="http://127.0.0.1:$port"
duration="${BENCH_SECONDS:-5}"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$bin" init-demo-model "$work/models/demo" >/dev/null
"$bin" serve --host 127.0.0.1 --port "$port" --models-dir "$work/models" --model demo \
  --data-dir "$work/data" --hub-cache-dir "$work/hub" --max-concurrent-requests 2 --min-steps 1 \
  --max-video-bytes 2147483648 --log-format json >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done
curl -sf "$base/health" >/dev/null || { echo "bench-server: server did not become healthy" >&2; cat "$work/server.log" >&2; exit 1; }

submit() {  # $1 = steps; prints the job id
  curl -s -X POST "$base/api/v1/generate/text-to-video" -H "Content-Type: application/json" \
    -d "{\"prompt\":\"bench\",\"num_frames\":9,\"width\":64,\"height\":48,\"num_inference_steps\":$1}" \
    | sed -E 's/.*"job_id":"([^"]+)".*/\1/'
}
job="$(submit 1)"

# wrk's summary: requests/s and the 99th percentile latency (--latency).
measure() {  # $1 = label, $2 = url, rest = extra wrk args
  local label="$1" url="$2"; shift 2
  local out; out="$(wrk -t1 -c16 -d"${duration}s" --latency "$@" "$url")"
  local rps p99
  rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
  echo "$label: ${rps} req/s, p99 ${p99}" >&2
  echo "$rps"
}
health_rps="$(measure "GET /health" "$base/health")"
job_rps="$(measure "GET /api/v1/job/{id}" "$base/api/v1/job/$job")"
awk -v a="$job_rps" -v b="$health_rps" 'BEGIN { printf "bench job-status vs health: ratio %.2f (goal >= 0.70)\n", a / b }'

# Fill the limit with two long jobs, then flood the generation route: every answer is a 429.
submit 100 >/dev/null; submit 100 >/dev/null
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":"flood","num_frames":9,"width":64,"height":48,"num_inference_steps":1}'
LUA
measure "POST generate at the limit (429)" "$base/api/v1/generate/text-to-video" -s "$work/post.lua" >/dev/null
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/api/v1/generate/text-to-video" -H 'Content-Type: application/json' -d '{"prompt":"x"}')"
echo "bench 429 check: status $code" >&2
curl -s -X DELETE "$base/api/v1/queue" >/dev/null || true

# A 1 GiB upload (a real mp4 header, then padding) through the storage route.
rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }
ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=8 -frames:v 9 -pix_fmt yuv420p "$work/head.mp4"
cp "$work/head.mp4" "$work/big.mp4"; truncate -s 1G "$work/big.mp4"
before="$(rss_kib)"
start="$(date +%s.%N)"
ucode="$(curl -s -o "$work/upload.json" -w '%{http_code}' -F "file=@$work/big.mp4" "$base/api/v1/storage/upload")"
end="$(date +%s.%N)"
after="$(rss_kib)"
awk -v s="$start" -v e="$end" -v b="$before" -v a="$after" -v c="$ucode" 'BEGIN {
  printf "bench 1GiB upload: status %s, %.0f MiB/s, peak RSS %.1f -> %.1f MiB (growth %.1f MiB, goal < 64)\n",
    c, 1024 / (e - s), b / 1024, a / 1024, (a - b) / 1024 }'
