#!/usr/bin/env bash
# The project's test command: installs what is missing (scripts/setup.sh),
# builds, and runs every test (make test: unit, parity against the committed
# reference fixtures, hostile-input cases, and a bounded libFuzzer run).
# Pass SANITIZE=1 to run the same tests under AddressSanitizer + UBSan instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
if [ "${SANITIZE:-0}" = 1 ]; then
    make -j"$jobs" asan
else
    make -j"$jobs" test
fi
