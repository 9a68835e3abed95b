#!/usr/bin/env bash
# Sets up, builds, lints and runs every test (ctest labels unit and e2e), then extra stages of
# scripts/ci_extra.sh: by default the fuzzers, 30 s per target (docs/TESTING.md). The Release,
# ASan+UBSan and TSan stages take 10-25 minutes each on two cores, which CI's time budget does
# not hold together; run them with REMORA_CI_STAGES="release asan tsan fuzz". Run as root.
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
  # shellcheck disable=SC2086 # a list of stage names
  FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash scripts/ci_extra.sh ${REMORA_CI_STAGES:-fuzz}
fi
