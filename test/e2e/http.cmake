# remora-proxy's L7 path end to end (issue 10): the seed world with Python http.server backends
# and a Python http.client holding one keep-alive connection; the proxy runs as uid 1337.
include(GoogleTest)
add_executable(http_e2e_test ${CMAKE_CURRENT_LIST_DIR}/http_e2e_test.cc)
target_link_libraries(http_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main)
add_dependencies(http_e2e_test remora-proxy remora-init)
gtest_discover_tests(http_e2e_test TEST_PREFIX "http." PROPERTIES LABELS e2e RUN_SERIAL TRUE
                     TIMEOUT 60 DISCOVERY_TIMEOUT 30)
