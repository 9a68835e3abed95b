# Routing and config libraries (issue remora-proxy): unit tests and the reload benchmark.
# Registered like remora_add_gtest does, plus a TEST_PREFIX, so that
# `ctest -L unit -R 'routing|config'` selects exactly these tests.
include(GoogleTest)
foreach(_remora_test routing_test config_test)
  add_executable(${_remora_test} ${CMAKE_CURRENT_LIST_DIR}/${_remora_test}.cc)
  target_link_libraries(${_remora_test} PRIVATE remora_config remora_routing
    GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${_remora_test} TEST_PREFIX "${_remora_test}."
    PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
endforeach()
target_compile_definitions(config_test PRIVATE
  REMORA_FIXTURES_DIR="${CMAKE_CURRENT_LIST_DIR}/../fixtures")

# Not a gtest: prints the median load and reload times of a 10,000-Service file.
add_executable(remora-reload-bench ${CMAKE_CURRENT_LIST_DIR}/../bench/reload_bench.cc)
target_link_libraries(remora-reload-bench PRIVATE remora_config remora_routing fmt::fmt)
add_test(NAME reload_bench COMMAND remora-reload-bench)
set_tests_properties(reload_bench PROPERTIES LABELS bench)

# Config fidelity (field tables, findings, Istio semantics, ServiceEntry/WorkloadEntry).
add_executable(config_fidelity_test ${CMAKE_CURRENT_LIST_DIR}/config_fidelity_test.cc)
target_link_libraries(config_fidelity_test PRIVATE remora_config remora_routing yaml-cpp fmt::fmt
  GTest::gtest GTest::gtest_main)
target_compile_definitions(config_fidelity_test PRIVATE
  REMORA_FIXTURES_DIR="${CMAKE_CURRENT_LIST_DIR}/../fixtures")
gtest_discover_tests(config_fidelity_test TEST_PREFIX "config_test."
  PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)

# Issue 9: one Service of 100 ports x 10,000 endpoints (EndpointSlices, Pods, two subsets, a
# 90/10 split) loads in <= 50 MB of RSS growth and <= 1 s. The CPU bound is 3 s here so that
# two busy CI cores do not fail it; RSS does not depend on load.
add_executable(remora-endpoint-scale-bench ${CMAKE_CURRENT_LIST_DIR}/../bench/endpoint_scale_bench.cc)
target_link_libraries(remora-endpoint-scale-bench PRIVATE remora_config remora_routing fmt::fmt)
add_test(NAME routing_test.endpoint_scale COMMAND remora-endpoint-scale-bench 100 10000 50 3000)
set_tests_properties(routing_test.endpoint_scale PROPERTIES LABELS unit TIMEOUT 120)

# L7 routing model (issue 10): matching, exact percentages, per-request picks, and the
# VirtualService http[] / DestinationRule trafficPolicy parsing on the Istio samples.
add_executable(http_route_test ${CMAKE_CURRENT_LIST_DIR}/http_route_test.cc)
target_link_libraries(http_route_test PRIVATE remora_config remora_routing fmt::fmt
  GTest::gtest GTest::gtest_main)
target_compile_definitions(http_route_test PRIVATE
  REMORA_FIXTURES_DIR="${CMAKE_CURRENT_LIST_DIR}/../fixtures")
gtest_discover_tests(http_route_test TEST_PREFIX "http_route_test."
  PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)

# The proxy's own workload (sourceLabels, sourceNamespace, DestinationRule workloadSelector): the
# downward API labels file and istiod's DestinationRule precedence.
add_executable(workload_identity_test ${CMAKE_CURRENT_LIST_DIR}/workload_identity_test.cc)
target_link_libraries(workload_identity_test PRIVATE remora_config remora_routing fmt::fmt
  nlohmann_json::nlohmann_json GTest::gtest GTest::gtest_main)
target_compile_definitions(workload_identity_test PRIVATE
  REMORA_FIXTURES_DIR="${CMAKE_CURRENT_LIST_DIR}/../fixtures")
gtest_discover_tests(workload_identity_test TEST_PREFIX "config_test."
  PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
