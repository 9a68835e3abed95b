# remora-proxy's admin endpoint and config reloads end to end (issue #9): overlapping admin
# connections, EMFILE backoff, connection cap, timeouts, UTF-8 in /config_dump, reload settling.
include(GoogleTest)
add_executable(proxy_admin_e2e_test ${CMAKE_CURRENT_LIST_DIR}/proxy_admin_e2e_test.cc)
target_link_libraries(proxy_admin_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main Threads::Threads)
add_dependencies(proxy_admin_e2e_test remora-proxy remora-init remora-probe)
# One at a time: each test builds its own namespaces, but they share the machine's two cores.
gtest_discover_tests(proxy_admin_e2e_test TEST_PREFIX "proxy_admin." PROPERTIES LABELS e2e
                     RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)
