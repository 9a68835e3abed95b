# remora-proxy's data path under slow, resetting and vanished peers, descriptor exhaustion and the
# drain (issue #9): real namespaces, remora-init rules, the proxy as uid 1337.
include(GoogleTest)
add_executable(proxy_robustness_e2e_test ${CMAKE_CURRENT_LIST_DIR}/proxy_robustness_e2e_test.cc)
target_link_libraries(proxy_robustness_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main Threads::Threads)
add_dependencies(proxy_robustness_e2e_test remora-proxy remora-init remora-probe)
gtest_discover_tests(proxy_robustness_e2e_test TEST_PREFIX "proxy." PROPERTIES LABELS e2e
                     RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)
