# mTLS and AuthorizationPolicy end to end: two pods, each with its own remora-proxy, certificates
# from the openssl CLI. Test names carry the "tls_e2e." prefix: `ctest -R tls_e2e`.
include(GoogleTest)
add_executable(tls_e2e_test ${CMAKE_CURRENT_LIST_DIR}/tls_e2e_test.cc)
target_link_libraries(tls_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main)
add_dependencies(tls_e2e_test remora-proxy remora-init remora-probe)
gtest_discover_tests(tls_e2e_test TEST_PREFIX "tls_e2e." PROPERTIES LABELS e2e RUN_SERIAL TRUE
                     TIMEOUT 120 DISCOVERY_TIMEOUT 30)
