# TPROXY inbound end to end: remora-init's TPROXY rules and policy route, remora-proxy's
# transparent inbound listener, a client in another pod; iptables and nftables modes.
remora_add_gtest(tproxy_e2e_test e2e ${CMAKE_CURRENT_LIST_DIR}/tproxy_e2e_test.cc)
target_link_libraries(tproxy_e2e_test PRIVATE remora_netns_world)
add_dependencies(tproxy_e2e_test remora-init remora-proxy remora-probe)
