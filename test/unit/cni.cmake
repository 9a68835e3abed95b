# remora-cni: CNI protocol (environment, CNI_ARGS, versions, config, prevResult), the plugin's
# commands against a fake dataplane, and conflist editing with the node installer.
# Test names carry the "cni." prefix, so `ctest -R cni` selects them.
include(GoogleTest)
foreach(_test cni_protocol_test cni_plugin_test cni_conflist_test cni_json_test)
  add_executable(${_test} ${CMAKE_CURRENT_LIST_DIR}/${_test}.cc)
  target_link_libraries(${_test} PRIVATE remora_cni_lib GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${_test} TEST_PREFIX "cni." PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
endforeach()
