# remora-cni under real runtimes. Root only; every test builds and removes its own namespaces,
# podman storage, networks and images, by name.
#   cni_chain_test     the reference bridge + host-local plugins, then remora-cni (ADD, CHECK,
#                      DEL, GC, STATUS, errors), asserted inside the pod's namespace; and the
#                      same chain in "mode": "ebpf" (CniEbpfE2e), on a cgroup the test makes.
#   cni.podman_*       podman (libcni) runs a container on an --internal network chained with
#                      remora-cni; the node installer against podman's conflist; podman kube
#                      play of the sidecar-injected Pod from deploy/; the same pod meshed by
#                      remora-cni in "mode": "ebpf" (kube_play_ebpf).
include(GoogleTest)
add_executable(cni_chain_test ${CMAKE_CURRENT_LIST_DIR}/cni_chain_test.cc)
target_link_libraries(cni_chain_test PRIVATE remora_netns_world remora_bpf
                      nlohmann_json::nlohmann_json fmt::fmt GTest::gtest GTest::gtest_main)
add_dependencies(cni_chain_test remora-cni remora-init remora-probe)
gtest_discover_tests(cni_chain_test TEST_PREFIX "cni." PROPERTIES LABELS e2e TIMEOUT 60
                     DISCOVERY_TIMEOUT 30)

foreach(_case libcni node_installer kube_play kube_play_ebpf)
  add_test(NAME cni.podman_${_case}
           COMMAND bash ${PROJECT_SOURCE_DIR}/test/e2e/cni_podman_test.sh ${_case}
                   ${PROJECT_BINARY_DIR}/bin)
  # Exit code 77 means "skipped, and the script said why" (podman, a binary or, for
  # kube_play_ebpf, a kernel feature missing).
  set_tests_properties(cni.podman_${_case} PROPERTIES
    LABELS e2e RUN_SERIAL TRUE TIMEOUT 170 SKIP_RETURN_CODE 77)
endforeach()

# CNI ADD latency (the README's figure); label bench, not run by default.
add_test(NAME cni.bench_add_latency
         COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/cni_bench.sh -n 50
                 --bin-dir ${PROJECT_BINARY_DIR}/bin)
set_tests_properties(cni.bench_add_latency PROPERTIES
  LABELS bench RUN_SERIAL TRUE TIMEOUT 300 SKIP_RETURN_CODE 77)
