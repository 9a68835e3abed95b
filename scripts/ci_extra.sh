#!/usr/bin/env bash
# CI stages after the main build and test run (scripts/test.sh calls this; docs/TESTING.md):
#
#   san_build  one clang build (build-fuzz) with ASan+UBSan everywhere and libFuzzer's coverage
#            instrumentation (-fsanitize=fuzzer-no-link,address,undefined), so the fuzz targets
#            and the sanitizer tests share the objects: every target but the benchmarks and the
#            e2e tests asan_quick does not run. scripts/test.sh runs it in
#            the background while the main ctest run waits on the network.
#   unit_san_build  san_build without the e2e binaries: what asan_units needs.
#   asan_units  in build-fuzz: every unit test under ASan+UBSan (LeakSanitizer on): asan_quick
#            without the e2e tests.
#   asan_quick  in build-fuzz: every unit test, and the e2e tests of the data path (ASAN_QUICK_E2E:
#            the proxy with its robustness tests, the admin server, HTTP, the kernel relay) under
#            ASan+UBSan. CI runs it.
#   fuzz     in build-fuzz: each libFuzzer target runs FUZZ_SECONDS (60) from its seed corpus
#            (test/fuzz/corpus/<name>) plus what earlier runs found, inputs up to 32 KiB (longer
#            seeds, such as the deep-nesting ones, are replayed whole by ctest); JOBS targets at
#            a time.
#   tsan_build  TSan build (build-tsan, GCC) of the proxy, its unit tests and proxy_e2e_test.
#   tsan     the proxy's unit tests and the ProxyE2e tests under TSan: the control thread and
#            worker threads of real proxies (--concurrency 2 in one)
#   release  -DCMAKE_BUILD_TYPE=Release builds every target (build-release). CI needs no
#            separate stage: test.sh's main build is Release (docs/TESTING.md).
#   asan     GCC ASan+UBSan build (build-asan); every unit and e2e test but the podman and bench
#            smoke tests (see ASAN_EXCLUDE below). Not run by CI (asan_quick is its subset).
#
# Usage: scripts/ci_extra.sh [stage ...]   (default: fuzz asan_quick tsan; a stage builds what
# it needs first, so the *_build stages only split the work). Run as root (the e2e tests need
# it). Every stage runs even if an earlier one failed; each prints its name and wall time, and
# the script fails if any stage did. Sanitizer reports of any process (tests and the binaries
# they start, as root or uid 1337) go to files that are printed and fail the stage.
#
# Environment: JOBS (default nproc), FUZZ_SECONDS (60), FUZZ_RSS_MB (2048), FUZZ_TIMEOUT (10 s
# per input), REMORA_BUILD_PREFIX (default: build, giving build-fuzz, ...).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

jobs=${JOBS:-$(nproc)}
prefix=${REMORA_BUILD_PREFIX:-build}
fuzz_seconds=${FUZZ_SECONDS:-60}
fuzz_rss_mb=${FUZZ_RSS_MB:-2048}
fuzz_timeout=${FUZZ_TIMEOUT:-10}
# One name per line (test/fuzz/CMakeLists.txt defines the targets).
fuzz_targets=(
  config_loader
  iptables_save
  cni_config
  cni_conflist
  admin_request
  http_codec
  http_match
  trace_nft
  nft_listing
  tls_client_hello
  pod_labels
)

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

# The sanitizer builds' debug info: line tables only, which is what the sanitizers' stack traces
# use (file, line and inlined frames), and about 30% less compile time than full -g with GCC
# (TSan, worker.cc: 9.8 s vs 14.0 s). The clang build stays at -O2: at -O1 (as OSS-Fuzz builds)
# std::regex's recursion in the trace_nft target took more stack per frame and overflowed it on
# a seed input under ASan (CI at 7f8d21d).
TSAN_FLAGS=(-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG")
CLANG_SAN_FLAGS=(-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG"
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG")

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
    "container image without the sanitizer runtimes; bench_quick_smoke measures speed;" \
    "nor $ASAN_QUICK_SKIP (see ASAN_QUICK_SKIP)"
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$logs/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
    ctest --test-dir "$dir" -L 'unit|e2e' -E "$ASAN_EXCLUDE|$ASAN_QUICK_SKIP" --output-on-failure \
    -j"$jobs" --timeout 900 || status=1
  check_sanitizer_logs "$logs" || status=1
  return $status
}

# The TSan build: remora-proxy with the programs its e2e tests start, the proxy's unit test
# binaries (proxy_*_test but not the *_e2e_test ones) and proxy_e2e_test.
stage_tsan_build() {
  local dir="$prefix-tsan" units
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREMORA_SANITIZE=thread \
    "${TSAN_FLAGS[@]}" >/dev/null ||
    return 1
  mapfile -t units < <(cmake --build "$dir" --target help |
    sed -n 's/^\.\.\. \(proxy_[a-z_]*_test\)$/\1/p' | grep -v '_e2e_test$')
  cmake --build "$dir" -j"$jobs" --target remora-proxy remora-init remora-probe proxy_e2e_test \
    "${units[@]}"
}

stage_tsan() {
  local dir="$prefix-tsan" logs status=0
  stage_tsan_build || return 1
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

# What asan_quick runs from the e2e tests: the data path (the proxy, its robustness tests, the
# admin server, HTTP, the kernel relay), which exercises the io_uring storage rules with real
# threads. Left to the full `asan` stage: intercept (remora-init), CNI, eBPF, DNS, TLS, trace.
ASAN_QUICK_E2E='^proxy\.|^proxy_admin\.|^http\.|^relay\.'
# Not under the sanitizers: two tests with latency bounds, which ASan's slowdown breaks (a p99
# under 50 ms with 40 slow readers, measured 608 ms; exit within 3 s of SIGTERM, measured 3.6 s),
# and the admin accept-error test, whose --nofile=48 leaves the UBSan runtime no descriptor: its
# vptr check probes memory through a pipe it cannot open, so it reports a live Worker as "not a
# CompletionHandler" (uring_ring.cc, in submitAndDispatch) and cannot open its log file either.
# Nor the route table's scale test, whose RSS and CPU bounds (50 MB, 3 s) ASan's shadow memory
# and slowdown break (measured 519 MB and 7.6 s under ASan).
ASAN_QUICK_SKIP='FortySlowReadersDoNotStall|SigtermExitsPromptlyWhileStdoutIsFull'
ASAN_QUICK_SKIP+='|AcceptErrorsBackOffAndServiceResumes|routing_test\.endpoint_scale'

configure_fuzz_build() {
  CC=clang CXX=clang++ cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREMORA_FUZZ=ON \
    "${CLANG_SAN_FLAGS[@]}" >/dev/null
}

# The e2e binaries of ASAN_QUICK_E2E's tests; the other e2e tests and the benchmarks are not
# built in build-fuzz.
ASAN_QUICK_E2E_BINARIES=(
  proxy_e2e_test
  proxy_robustness_e2e_test
  proxy_admin_e2e_test
  http_e2e_test
  kernel_relay_e2e_test
)

# Builds in build-fuzz: the libFuzzer binaries and, ASan+UBSan-instrumented like them, the
# libraries, programs and unit tests (not the benchmarks of label bench, nor the e2e binaries;
# remora-endpoint-scale-bench is a unit test's), plus the targets given.
build_san_targets() {
  local dir="$prefix-fuzz" targets
  configure_fuzz_build "$dir" || return 1
  mapfile -t targets < <(cmake --build "$dir" --target help |
    sed -n 's/^\.\.\. \([A-Za-z0-9_.+-]*\).*/\1/p' |
    grep -vxE 'all|clean|depend|edit_cache|rebuild_cache|test|.*_e2e_test|cni_chain_test' |
    grep -vxE 'http-codec-bench|kernel_relay_bench|proxy_churn_bench|remora-reload-bench')
  cmake --build "$dir" -j"$jobs" --target "${targets[@]}" "$@"
}

# What asan_units and fuzz need of build-fuzz.
stage_unit_san_build() { build_san_targets; }
# What asan_quick and fuzz need: the same and ASAN_QUICK_E2E_BINARIES.
stage_san_build() { build_san_targets "${ASAN_QUICK_E2E_BINARIES[@]}"; }

# Every unit test under ASan, LeakSanitizer and UBSan (but ASAN_QUICK_SKIP's); the sanitizer
# environment stays exported for what the caller runs next. Logs go to $1.
run_san_units() {
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$1/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$1/ubsan"
  ctest --test-dir "$prefix-fuzz" -L unit -E "$ASAN_QUICK_SKIP" --output-on-failure -j"$jobs" \
    --timeout 900
}

stage_asan_units() {
  local logs status=0
  stage_unit_san_build || return 1
  logs=$(sanitizer_log_dir fuzz)
  echo "asan_units: every unit test but those matching $ASAN_QUICK_SKIP"
  run_san_units "$logs" || status=1
  unset ASAN_OPTIONS UBSAN_OPTIONS
  check_sanitizer_logs "$logs" || status=1
  return $status
}

stage_asan_quick() {
  local dir="$prefix-fuzz" logs status=0
  stage_san_build || return 1
  logs=$(sanitizer_log_dir fuzz)
  run_san_units "$logs" || status=1
  echo "asan_quick: the e2e tests matching $ASAN_QUICK_E2E but not $ASAN_QUICK_SKIP"
  ctest --test-dir "$dir" -L e2e -R "$ASAN_QUICK_E2E" -E "$ASAN_QUICK_SKIP" --output-on-failure \
    -j"$jobs" --timeout 900 || status=1
  unset ASAN_OPTIONS UBSAN_OPTIONS
  check_sanitizer_logs "$logs" || status=1
  return $status
}

# Runs one fuzz target for fuzz_seconds; its output goes to $dir/fuzz-$1.log.
run_fuzz_target() {
  local dir=$1 t=$2 work="$1/fuzz-corpus/$2" artifacts="$1/fuzz-artifacts/$2"
  # New inputs go to the first corpus directory (kept between runs, in the build dir); the
  # committed seeds are read only.
  mkdir -p "$work" "$artifacts"
  "$dir/bin/remora-fuzz-$t" -max_total_time="$fuzz_seconds" -rss_limit_mb="$fuzz_rss_mb" \
    -timeout="$fuzz_timeout" -max_len=32768 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$work" "test/fuzz/corpus/$t" >"$dir/fuzz-$t.log" 2>&1
}

stage_fuzz() {
  local dir="$prefix-fuzz" status=0 t i
  local -A pid_of=()
  configure_fuzz_build "$dir" && cmake --build "$dir" -j"$jobs" --target fuzz || return 1
  echo "fuzz: ${#fuzz_targets[@]} targets, ${fuzz_seconds}s each, $jobs at a time"
  # Each target is one process on one core, so JOBS of them run side by side.
  for i in "${!fuzz_targets[@]}"; do
    if ((i >= jobs)); then wait -n; fi
    t=${fuzz_targets[$i]}
    run_fuzz_target "$dir" "$t" &
    pid_of[$t]=$!
  done
  for t in "${fuzz_targets[@]}"; do
    if ! wait "${pid_of[$t]}"; then
      status=1
      tail -n 60 "$dir/fuzz-$t.log"
      echo "fuzz: $t failed; inputs in $dir/fuzz-artifacts/$t/" \
        "(reproduce: $dir/bin/remora-fuzz-$t FILE)" >&2
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|^#[0-9]+.*DONE' \
      "$dir/fuzz-$t.log" | sed "s/^/fuzz: $t: /"
  done
  return $status
}

stages=("$@")
((${#stages[@]})) || stages=(fuzz asan_quick tsan)
failed=()
for s in "${stages[@]}"; do
  if ! declare -F "stage_$s" >/dev/null; then
    echo "ci_extra.sh: unknown stage '$s' (san_build, unit_san_build, asan_units, asan_quick, fuzz, tsan_build, tsan, release, asan)" >&2
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
