#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the parity test against ../shared/fixtures
# (or $WAN_FIXTURES), and the end-to-end tests. Installs the system packages first.
# Ends with one summary line over all test binaries: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# Sum libtest's "test result" lines and the parity test's own closing line.
awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /^parity: [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
  END { printf "tests: %d passed, %d failed\n", p, f }
' "$log"
exit "$status"
