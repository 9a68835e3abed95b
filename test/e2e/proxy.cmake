# remora-proxy end to end: real namespaces, real remora-init rules, the proxy as uid 1337.
include(GoogleTest)
add_executable(proxy_e2e_test ${CMAKE_CURRENT_LIST_DIR}/proxy_e2e_test.cc)
target_link_libraries(proxy_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main)
add_dependencies(proxy_e2e_test remora-proxy remora-init remora-probe)
# One at a time: each test builds its own namespaces, but they share the machine's two cores.
gtest_discover_tests(proxy_e2e_test TEST_PREFIX "proxy." PROPERTIES LABELS e2e RUN_SERIAL TRUE
                     TIMEOUT 120 DISCOVERY_TIMEOUT 30)
