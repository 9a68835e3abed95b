# The benchmark harness's --quick mode as a smoke test (issue 5): it asserts only that every
# setup produced numbers and that the topology was cleaned up, never a speed. RUN_SERIAL keeps
# other tests off the machine while it runs.
add_test(NAME bench_quick_smoke
  COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/bench.sh --quick --no-build
          --build-dir ${PROJECT_BINARY_DIR})
set_tests_properties(bench_quick_smoke PROPERTIES LABELS e2e RUN_SERIAL TRUE TIMEOUT 600)
