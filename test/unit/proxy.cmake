# remora-proxy's unit tests (no privileges; proxy_ring_test uses a real ring). Test names carry
# a "proxy." prefix so `ctest -R proxy` selects them.
include(GoogleTest)
foreach(_t proxy_worker_test proxy_admin_test proxy_stats_test proxy_ring_test proxy_cli_test
    proxy_http_pool_test proxy_http_proxy_test proxy_sniffer_test proxy_relay_handover_test)
  add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cc)
  target_link_libraries(${_t} PRIVATE remora_proxy_lib GTest::gtest GTest::gtest_main)
  target_include_directories(${_t} PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  gtest_discover_tests(${_t} TEST_PREFIX "proxy." PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
endforeach()

# Connection churn with 10 and with 9,000 idle connections open (issue #9); label bench, so
# neither `ctest -L unit` nor `-L e2e` runs it: ctest --test-dir BUILD -L bench -V
add_executable(proxy_churn_bench ${PROJECT_SOURCE_DIR}/test/bench/proxy_churn_bench.cc)
target_link_libraries(proxy_churn_bench PRIVATE remora_proxy_lib)
add_test(NAME bench.proxy_churn COMMAND proxy_churn_bench --idle 10,9000,10,9000 --seconds 3)
set_tests_properties(bench.proxy_churn PROPERTIES LABELS bench RUN_SERIAL TRUE TIMEOUT 300)

# What a registered ring fd saves per io_uring_enter (issue 12 item 3); label bench:
# ctest --test-dir BUILD -L bench -R ring_enter -V, or BUILD/bin/ring_enter_bench [blocks]
add_executable(ring_enter_bench ${PROJECT_SOURCE_DIR}/test/bench/ring_enter_bench.cc)
target_link_libraries(ring_enter_bench PRIVATE remora_loop Threads::Threads)
add_test(NAME bench.ring_enter COMMAND ring_enter_bench 21)
set_tests_properties(bench.ring_enter PROPERTIES LABELS bench RUN_SERIAL TRUE TIMEOUT 120)
