# remora-init dump --trace against a real kernel: a kube-proxy ruleset loaded into a netns of the
# test's own, read back with iptables-nft and iptables-legacy. Root only; no traffic.
remora_add_gtest(trace_e2e_test e2e ${CMAKE_CURRENT_LIST_DIR}/trace_e2e_test.cc)
target_link_libraries(trace_e2e_test PRIVATE remora_intercept)
target_compile_definitions(trace_e2e_test PRIVATE
  REMORA_FIXTURES_DIR="${PROJECT_SOURCE_DIR}/test/fixtures")
