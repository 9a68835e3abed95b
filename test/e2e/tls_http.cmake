# L7 HTTP over mTLS end to end: per-request routing and AuthorizationPolicy between sidecars that
# speak mTLS. Test names carry the "tls_http_e2e." prefix: `ctest -R tls_http_e2e`.
include(GoogleTest)
add_executable(tls_http_e2e_test ${CMAKE_CURRENT_LIST_DIR}/tls_http_e2e_test.cc)
target_link_libraries(tls_http_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main)
add_dependencies(tls_http_e2e_test remora-proxy remora-init)
gtest_discover_tests(tls_http_e2e_test TEST_PREFIX "tls_http_e2e." PROPERTIES LABELS e2e
                     RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)
