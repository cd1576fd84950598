#!/usr/bin/env bash
# A fresh machine to a running server in one command: installs the system packages, builds
# wan-server, writes the tiny random-weight demo model to models/demo (once) and serves it on
# http://127.0.0.1:8080 with the embedded defaults (SQLite store and outputs under ./data).
# The demo model makes noise, not pictures: see README.md for the real model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p wan-server
bin=target/release/wan-server
if [ ! -f models/demo/model_index.json ]; then
  "$bin" init-demo-model models/demo
fi
exec "$bin" serve --model demo "$@"
