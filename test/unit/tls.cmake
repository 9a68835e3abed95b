# The TLS engine (userspace/tls) over in-memory pipes; certificates made in process.
# Test names carry a "tls." prefix, so `ctest -R '^tls'` selects them.
include(GoogleTest)
add_executable(tls_test ${CMAKE_CURRENT_LIST_DIR}/tls_test.cc)
target_link_libraries(tls_test PRIVATE remora_tls GTest::gtest GTest::gtest_main)
target_include_directories(tls_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})
gtest_discover_tests(tls_test TEST_PREFIX "tls." PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
