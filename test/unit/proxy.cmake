# remora-proxy's unit tests (no privileges; proxy_ring_test uses a real ring). Test names carry
# a "proxy." prefix so `ctest -R proxy` selects them.
include(GoogleTest)
foreach(_t proxy_worker_test proxy_admin_test proxy_stats_test proxy_ring_test proxy_cli_test)
  add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cc)
  target_link_libraries(${_t} PRIVATE remora_proxy_lib GTest::gtest GTest::gtest_main)
  target_include_directories(${_t} PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  gtest_discover_tests(${_t} TEST_PREFIX "proxy." PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
endforeach()
