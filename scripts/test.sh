#!/usr/bin/env bash
# Sets up, builds, lints and runs every test (ctest labels unit and e2e). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
bash scripts/lint.sh build
ctest --test-dir build -L 'unit|e2e' --output-on-failure -j"$(nproc)" --timeout 600
