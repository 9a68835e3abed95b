# Issue 16: scripts/demo.sh (run with the binaries of this build, no setup or build of its own)
# must leave no process of its own running: asserted by the command lines that name its work
# directory, plus its namespaces and its report of the proxy's exit status. Root only.
add_test(NAME demo.no_process_left
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/demo_leak_test.sh ${PROJECT_BINARY_DIR}/bin
          ${PROJECT_SOURCE_DIR}/scripts/demo.sh)
set_tests_properties(demo.no_process_left PROPERTIES
  LABELS e2e RUN_SERIAL TRUE TIMEOUT 420 SKIP_RETURN_CODE 77)
