# DestinationRule tls SIMPLE / MUTUAL toward a TLS server outside the mesh (a Python ssl server
# the test starts), certificates from the openssl CLI. `ctest -R tls_origination_e2e`.
include(GoogleTest)
add_executable(tls_origination_e2e_test ${CMAKE_CURRENT_LIST_DIR}/tls_origination_e2e_test.cc)
target_link_libraries(tls_origination_e2e_test PRIVATE remora_netns_world fmt::fmt GTest::gtest
                      GTest::gtest_main)
add_dependencies(tls_origination_e2e_test remora-proxy remora-init remora-probe)
gtest_discover_tests(tls_origination_e2e_test TEST_PREFIX "tls_origination_e2e."
                     PROPERTIES LABELS e2e RUN_SERIAL TRUE TIMEOUT 120 DISCOVERY_TIMEOUT 30)
