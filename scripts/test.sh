#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the parity test against ../shared/fixtures
# (or $WAN_FIXTURES), and the end-to-end tests. Installs the system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --release --workspace
