# Config fidelity end to end: `remora-proxy check` on Bookinfo-shaped YAML, and the same config
# served by a real proxy in the test's own namespaces (exact 80/20 over real connections).
include(GoogleTest)
add_executable(config_fidelity_e2e_test ${CMAKE_CURRENT_LIST_DIR}/config_fidelity_e2e_test.cc)
target_link_libraries(config_fidelity_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main)
target_compile_definitions(config_fidelity_e2e_test PRIVATE
  REMORA_FIXTURES_DIR="${PROJECT_SOURCE_DIR}/test/fixtures")
add_dependencies(config_fidelity_e2e_test remora-proxy remora-init remora-probe)
gtest_discover_tests(config_fidelity_e2e_test TEST_PREFIX "config_e2e." PROPERTIES LABELS e2e
                     RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)
