# Security policy (userspace/security): PeerAuthentication resolution and AuthorizationPolicy
# evaluation. Test names carry a "security." prefix: `ctest -R '^security'`.
include(GoogleTest)
add_executable(security_policy_test ${CMAKE_CURRENT_LIST_DIR}/security_policy_test.cc)
target_link_libraries(security_policy_test PRIVATE remora_security GTest::gtest GTest::gtest_main)
gtest_discover_tests(security_policy_test TEST_PREFIX "security." PROPERTIES LABELS unit
  DISCOVERY_TIMEOUT 30)
add_executable(security_config_test ${CMAKE_CURRENT_LIST_DIR}/security_config_test.cc)
target_link_libraries(security_config_test PRIVATE remora_config remora_routing GTest::gtest
  GTest::gtest_main)
gtest_discover_tests(security_config_test TEST_PREFIX "security." PROPERTIES LABELS unit
  DISCOVERY_TIMEOUT 30)
