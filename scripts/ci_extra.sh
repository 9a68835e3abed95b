#!/usr/bin/env bash
# CI stages after the main build and test run (scripts/test.sh calls this; docs/TESTING.md):
#
#   release  -DCMAKE_BUILD_TYPE=Release builds every target (build-release)
#   asan     ASan+UBSan build (build-asan); ctest -L 'unit|e2e' without the podman and bench
#            smoke tests (see ASAN_EXCLUDE below)
#   tsan     TSan build (build-tsan) of the proxy; its unit tests and the ProxyE2e tests, which
#            run remora-proxy's control and worker threads (--concurrency 2 in one)
#   fuzz     libFuzzer build with clang (build-fuzz); each target runs FUZZ_SECONDS (60) from
#            its seed corpus (test/fuzz/corpus/<name>) plus what earlier runs found,
#            inputs up to 32 KiB (longer seeds, such as the deep-nesting ones, are replayed whole
#            by ctest)
#   asan_quick  the rest of build-fuzz (clang, ASan+UBSan everywhere, so the objects the fuzz
#            stage compiled are reused): every unit test, and the e2e tests of the proxy
#            (ProxyE2e, the admin server), under ASan+UBSan. The cheap subset of `asan` that CI
#            runs; `asan` runs every e2e test too, in its own GCC build.
#
# Usage: scripts/ci_extra.sh [stage ...]   (default: release asan tsan fuzz). Run as root (the
# e2e tests need it). Every stage runs even if an earlier one failed; each prints its name and
# wall time, and the script fails if any stage did. Sanitizer reports of any process (tests and
# the binaries they start, as root or uid 1337) go to files that are printed and fail the stage.
#
# Environment: JOBS (default nproc), FUZZ_SECONDS (60), FUZZ_RSS_MB (2048), FUZZ_TIMEOUT (10 s
# per input), REMORA_BUILD_PREFIX (default: build, giving build-asan, ...).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

jobs=${JOBS:-$(nproc)}
prefix=${REMORA_BUILD_PREFIX:-build}
fuzz_seconds=${FUZZ_SECONDS:-60}
fuzz_rss_mb=${FUZZ_RSS_MB:-2048}
fuzz_timeout=${FUZZ_TIMEOUT:-10}
fuzz_targets=(config_loader iptables_save cni_config cni_conflist admin_request http_codec http_match trace_nft)

# The podman tests build an image from the binaries and run them in containers, where the
# sanitizer runtimes (shared libraries of the build machine) are absent; the bench smoke test
# measures speed, which means nothing under ASan and would take most of the stage.
ASAN_EXCLUDE='^cni\.podman_|^bench_quick_smoke$'

# A directory every user may write to (the proxy runs as uid 1337), for the sanitizer logs.
sanitizer_log_dir() {
  local dir="$root/$prefix-$1/sanitizer-logs"
  rm -rf "$dir"
  mkdir -p "$dir"
  chmod 1777 "$dir"
  echo "$dir"
}

# Prints the reports found in $1 and fails if there are any.
check_sanitizer_logs() {
  local dir=$1 found=0 f
  for f in "$dir"/*; do
    [[ -e $f ]] || continue
    found=1
    echo "---- sanitizer report $f"
    cat "$f"
  done
  ((found == 0)) || { echo "sanitizer reports in $dir" >&2; return 1; }
}

stage_release() {
  cmake -S . -B "$prefix-release" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
    cmake --build "$prefix-release" -j"$jobs"
}

stage_asan() {
  local dir="$prefix-asan" logs status=0
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREMORA_SANITIZE=address,undefined \
    >/dev/null && cmake --build "$dir" -j"$jobs" || return 1
  logs=$(sanitizer_log_dir asan)
  echo "asan: not run under ASan (regex $ASAN_EXCLUDE): the podman tests run the binaries in a" \
    "container image without the sanitizer runtimes; bench_quick_smoke measures speed"
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$logs/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
    ctest --test-dir "$dir" -L 'unit|e2e' -E "$ASAN_EXCLUDE" --output-on-failure -j"$jobs" \
    --timeout 900 || status=1
  check_sanitizer_logs "$logs" || status=1
  return $status
}

stage_tsan() {
  local dir="$prefix-tsan" logs status=0 units
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREMORA_SANITIZE=thread >/dev/null ||
    return 1
  # The proxy's unit test binaries (proxy_*_test but not the *_e2e_test ones) and the e2e
  # binary of the ProxyE2e tests, with the programs those start.
  mapfile -t units < <(cmake --build "$dir" --target help |
    sed -n 's/^\.\.\. \(proxy_[a-z_]*_test\)$/\1/p' | grep -v '_e2e_test$')
  cmake --build "$dir" -j"$jobs" --target remora-proxy remora-init remora-probe proxy_e2e_test \
    "${units[@]}" || return 1
  logs=$(sanitizer_log_dir tsan)
  echo "tsan: the proxy's unit tests and proxy_e2e_test (ProxyE2e: real threads, one with" \
    "--concurrency 2); not the robustness e2e tests, whose latency bounds assume no TSan"
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan"
  ctest --test-dir "$dir" -L unit -R '^proxy\.' --output-on-failure -j"$jobs" --timeout 900 ||
    status=1
  ctest --test-dir "$dir" -L e2e -R '^proxy\.ProxyE2e\.' --output-on-failure --timeout 900 ||
    status=1
  unset TSAN_OPTIONS
  check_sanitizer_logs "$logs" || status=1
  return $status
}

# What asan_quick runs from the e2e tests: the proxy's, which exercise the io_uring storage
# rules (admin connections, drain, reload) with real threads.
ASAN_QUICK_E2E='^proxy\.ProxyE2e\.|^proxy_admin\.'

configure_fuzz_build() {
  CC=clang CXX=clang++ cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREMORA_FUZZ=ON \
    >/dev/null
}

stage_asan_quick() {
  local dir="$prefix-fuzz" logs status=0
  configure_fuzz_build "$dir" && cmake --build "$dir" -j"$jobs" || return 1
  logs=$(sanitizer_log_dir fuzz)
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$logs/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
  ctest --test-dir "$dir" -L unit --output-on-failure -j"$jobs" --timeout 900 || status=1
  ctest --test-dir "$dir" -L e2e -R "$ASAN_QUICK_E2E" --output-on-failure --timeout 900 ||
    status=1
  unset ASAN_OPTIONS UBSAN_OPTIONS
  check_sanitizer_logs "$logs" || status=1
  return $status
}

stage_fuzz() {
  local dir="$prefix-fuzz" status=0 t work artifacts
  configure_fuzz_build "$dir" && cmake --build "$dir" -j"$jobs" --target fuzz || return 1
  for t in "${fuzz_targets[@]}"; do
    # New inputs go to the first corpus directory (kept between runs, in the build dir); the
    # committed seeds are read only.
    work="$dir/fuzz-corpus/$t"
    artifacts="$dir/fuzz-artifacts/$t"
    mkdir -p "$work" "$artifacts"
    echo "fuzz: $t for ${fuzz_seconds}s"
    if ! "$dir/bin/remora-fuzz-$t" -max_total_time="$fuzz_seconds" \
      -rss_limit_mb="$fuzz_rss_mb" -timeout="$fuzz_timeout" -max_len=32768 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" "$work" "test/fuzz/corpus/$t" >"$dir/fuzz-$t.log" 2>&1; then
      status=1
      tail -n 60 "$dir/fuzz-$t.log"
      echo "fuzz: $t failed; inputs in $artifacts/ (reproduce: $dir/bin/remora-fuzz-$t FILE)" >&2
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|^#[0-9]+.*DONE' \
      "$dir/fuzz-$t.log" | sed "s/^/fuzz: $t: /"
  done
  return $status
}

stages=("$@")
((${#stages[@]})) || stages=(release asan tsan fuzz)
failed=()
for s in "${stages[@]}"; do
  if ! declare -F "stage_$s" >/dev/null; then
    echo "ci_extra.sh: unknown stage '$s' (release, asan, tsan, fuzz, asan_quick)" >&2
    exit 2
  fi
  echo "== stage $s"
  start=$SECONDS
  if "stage_$s"; then result=ok; else result=FAILED; failed+=("$s"); fi
  echo "== stage $s: $result in $((SECONDS - start)) s"
done
if ((${#failed[@]})); then
  echo "ci_extra.sh: failed stages: ${failed[*]}" >&2
  exit 1
fi
