# remora_dns against dnsmasq run by the test in its own network namespace (root).
include(GoogleTest)
add_executable(dns_e2e_test ${CMAKE_CURRENT_LIST_DIR}/dns_e2e_test.cc)
target_link_libraries(dns_e2e_test PRIVATE remora_dns GTest::gtest GTest::gtest_main)
gtest_discover_tests(dns_e2e_test TEST_PREFIX "dns_e2e_test." PROPERTIES LABELS e2e DISCOVERY_TIMEOUT 30)
