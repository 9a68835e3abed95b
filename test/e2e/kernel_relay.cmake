# The proxy's kernel relay (sockmap, docs/PROXY.md "Kernel relay"): real namespaces, remora-init
# rules and relay pins, the proxy as uid 1337 without capabilities.
include(GoogleTest)
add_executable(kernel_relay_e2e_test ${CMAKE_CURRENT_LIST_DIR}/kernel_relay_e2e_test.cc)
target_link_libraries(kernel_relay_e2e_test PRIVATE remora_netns_world remora_bpf nlohmann_json::nlohmann_json fmt::fmt GTest::gtest
                      GTest::gtest_main Threads::Threads)
add_dependencies(kernel_relay_e2e_test remora-proxy remora-init remora-probe)
gtest_discover_tests(kernel_relay_e2e_test TEST_PREFIX "relay." PROPERTIES LABELS e2e
                     RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)

# The same world measuring uring against kernel side by side (label bench, not run by default):
# ctest --test-dir BUILD -R relay_bench --output-on-failure -V
add_executable(kernel_relay_bench ${CMAKE_CURRENT_LIST_DIR}/kernel_relay_e2e_test.cc)
target_link_libraries(kernel_relay_bench PRIVATE remora_netns_world remora_bpf nlohmann_json::nlohmann_json fmt::fmt GTest::gtest
                      GTest::gtest_main Threads::Threads)
target_compile_definitions(kernel_relay_bench PRIVATE REMORA_RELAY_BENCH)
add_dependencies(kernel_relay_bench remora-proxy remora-init remora-probe)
gtest_discover_tests(kernel_relay_bench TEST_PREFIX "relay_bench." PROPERTIES LABELS bench
                     RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)
