# The admin server on a real ring, the slot table it shares with the worker, and the reload
# helpers (issue #9). Test names carry a "proxy." prefix so `ctest -R proxy` selects them.
include(GoogleTest)
foreach(_t proxy_admin_server_test proxy_reload_test slot_table_test)
  add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cc)
  target_link_libraries(${_t} PRIVATE remora_proxy_lib GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${_t} TEST_PREFIX "proxy." PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
endforeach()
