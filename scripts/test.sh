#!/usr/bin/env bash
# Sets up, builds (Release, as shipped), lints and runs every test (ctest labels unit and e2e), then
# the extra stages of scripts/ci_extra.sh (docs/TESTING.md). By default:
#   fuzz        each libFuzzer target for FUZZ_SECONDS (30), two at a time (build-fuzz)
#   asan_quick  every unit test and the data path's e2e tests (the proxy with its robustness
#               tests, the admin server, HTTP, the kernel relay) under ASan+UBSan (build-fuzz:
#               the fuzzers' instrumented objects, built in the background while ctest runs)
#   tsan        the proxy's unit tests and ProxyE2e under TSan (build-tsan, built in the
#               background while ctest runs)
# asan_units (the unit tests alone under ASan+UBSan) is asan_quick without the e2e tests, e.g.
#   REMORA_CI_STAGES="asan_units fuzz tsan" scripts/test.sh
# Work that needs CPU runs beside work that waits: clang-tidy, the build-fuzz build and the
# TSan build run in the background while the main ctest run waits on its network
# namespaces. The background jobs run at
# SCHED_IDLE (chrt --idle), so they get only the CPU the tests leave unused. Every stage prints
# its wall time, and a summary closes the run. Run as root.
#   scripts/test.sh --no-extra   (or REMORA_CI_EXTRA=0) stops after the main ctest run.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=${REMORA_CI_EXTRA:-1}
if [[ ${1:-} == --no-extra ]]; then extra=0; fi
read -r -a stages <<<"${REMORA_CI_STAGES:-fuzz asan_quick tsan}"
export FUZZ_SECONDS=${FUZZ_SECONDS:-30}
jobs=$(nproc)
logs=build/ci-logs
summary=()
failed=()
t0=$SECONDS

# Runs a stage in the foreground: stage NAME COMMAND...
stage() {
  local name=$1 start=$SECONDS result=ok
  shift
  echo "== stage $name"
  "$@" || result=FAILED
  summary+=("$(printf '%-12s %-6s %5d s' "$name" "$result" $((SECONDS - start)))")
  echo "== stage $name: $result in $((SECONDS - start)) s"
  [[ $result == ok ]] || failed+=("$name")
}

# Starts a stage in the background at idle priority, its output in $logs/NAME.log:
# background NAME COMMAND...   Its result comes with `await NAME`.
declare -A bg_pid=() bg_start=()
background() {
  local name=$1 idle=(nice -n 19)
  shift
  # SCHED_IDLE where the machine allows it (a container may not), nice 19 otherwise.
  if chrt --idle 0 true 2>/dev/null; then idle=(chrt --idle 0); fi
  echo "== stage $name: started in the background (${idle[*]})"
  bg_start[$name]=$SECONDS
  "${idle[@]}" "$@" >"$logs/$name.log" 2>&1 &
  bg_pid[$name]=$!
}

# Waits for a background stage, prints its output and records its result.
await() {
  local name=$1 result=ok waited=$SECONDS
  wait "${bg_pid[$name]}" || result=FAILED
  echo "== stage $name (background) output:"
  cat "$logs/$name.log"
  summary+=("$(printf '%-12s %-6s %5d s  (background; waited for %d s)' "$name" "$result" \
    $((SECONDS - bg_start[$name])) $((SECONDS - waited)))")
  echo "== stage $name: $result in $((SECONDS - bg_start[$name])) s" \
    "(background; $((SECONDS - waited)) s of it waited for here)"
  [[ $result == ok ]] || failed+=("$name")
}

has_stage() { [[ " ${stages[*]} " == *" $1 "* ]]; }

stage setup bash scripts/setup.sh
build() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j"$jobs"
}
stage build build
if [[ ${failed[*]} == *build* ]]; then
  echo "test.sh: the build failed" >&2
  exit 1
fi
mkdir -p "$logs"

background lint bash scripts/lint.sh build
if ((extra)) && has_stage asan_quick; then
  background san_build bash scripts/ci_extra.sh san_build
elif ((extra)) && has_stage asan_units; then
  background unit_san_build bash scripts/ci_extra.sh unit_san_build
fi
if ((extra)) && has_stage tsan; then
  background tsan_build bash scripts/ci_extra.sh tsan_build
fi
stage ctest ctest --test-dir build -L 'unit|e2e' --output-on-failure -j"$jobs" --timeout 600
await lint

if ((extra)); then
  if [[ -n ${bg_pid[san_build]:-} ]]; then await san_build; fi
  if [[ -n ${bg_pid[unit_san_build]:-} ]]; then await unit_san_build; fi
  for s in "${stages[@]}"; do
    if [[ $s == tsan && -n ${bg_pid[tsan_build]:-} ]]; then await tsan_build; fi
    stage "$s" bash scripts/ci_extra.sh "$s"
  done
fi

echo "== summary (wall times; total $((SECONDS - t0)) s)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "test.sh: failed stages: ${failed[*]}" >&2
  exit 1
fi
