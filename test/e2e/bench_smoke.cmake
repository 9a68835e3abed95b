# The benchmark harness's --quick mode as a smoke test (issues 5 and 12): it asserts only that
# every setup produced numbers (the capped runs and machine-wide CPU included, where the machine
# has a cpu controller) and that the topology (namespaces, the cap's cgroups) was cleaned up,
# never a speed. RUN_SERIAL keeps other tests off the machine while it runs.
add_test(NAME bench_quick_smoke
  COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/bench.sh --quick --no-build
          --build-dir ${PROJECT_BINARY_DIR})
set_tests_properties(bench_quick_smoke PROPERTIES LABELS e2e RUN_SERIAL TRUE TIMEOUT 600)
