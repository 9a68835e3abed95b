# remora_dns (ServiceEntry resolution: DNS): cache logic and server-less Resolver checks.
# TEST_PREFIX makes `ctest -R '^dns'` select exactly these and the dns e2e test.
include(GoogleTest)
add_executable(dns_test ${CMAKE_CURRENT_LIST_DIR}/dns_test.cc)
target_link_libraries(dns_test PRIVATE remora_dns GTest::gtest GTest::gtest_main)
gtest_discover_tests(dns_test TEST_PREFIX "dns_test." PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
