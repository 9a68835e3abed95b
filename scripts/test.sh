#!/usr/bin/env bash
# Sets up, builds, lints and runs every test (ctest labels unit and e2e), then the extra CI
# stages of scripts/ci_extra.sh: Release build, ASan+UBSan, TSan and the fuzzers (about 30 more
# minutes on two cores; docs/TESTING.md). Run as root.
#   scripts/test.sh --no-extra   (or REMORA_CI_EXTRA=0) stops after the main ctest run.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=${REMORA_CI_EXTRA:-1}
if [[ ${1:-} == --no-extra ]]; then extra=0; fi

bash scripts/setup.sh
start=$SECONDS
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
bash scripts/lint.sh build
ctest --test-dir build -L 'unit|e2e' --output-on-failure -j"$(nproc)" --timeout 600
echo "== stage main (build, lint, ctest): ok in $((SECONDS - start)) s"

if ((extra)); then
  bash scripts/ci_extra.sh
fi
