remora_add_gtest(init_e2e_test e2e ${CMAKE_CURRENT_LIST_DIR}/init_e2e_test.cc)
target_link_libraries(init_e2e_test PRIVATE remora_netns_world)
add_dependencies(init_e2e_test remora-init remora-probe)
