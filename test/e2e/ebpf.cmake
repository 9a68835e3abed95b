remora_add_gtest(ebpf_e2e_test e2e ${CMAKE_CURRENT_LIST_DIR}/ebpf_e2e_test.cc)
target_link_libraries(ebpf_e2e_test PRIVATE remora_netns_world remora_bpf nlohmann_json::nlohmann_json)
add_dependencies(ebpf_e2e_test remora-init remora-probe remora-proxy)
