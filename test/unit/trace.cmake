# remora-init dump / dump --trace: the iptables-save parser, the nat OUTPUT evaluator and the dump
# renderer. The fixtures are iptables-save captures from real netns installs.
# Same as remora_add_gtest, plus a TEST_PREFIX naming the binary: discovered names are otherwise
# "Suite.Case", which `ctest -R 'iptables_save|trace|dump'` (case-sensitive) would not select.
include(GoogleTest)
foreach(_name iptables_save_test trace_test trace_nft_test dump_test)
  add_executable(${_name} ${CMAKE_CURRENT_LIST_DIR}/${_name}.cc)
  target_link_libraries(${_name} PRIVATE GTest::gtest GTest::gtest_main GTest::gmock
                                         remora_intercept)
  target_compile_definitions(${_name} PRIVATE
    REMORA_FIXTURES_DIR="${PROJECT_SOURCE_DIR}/test/fixtures")
  gtest_discover_tests(${_name} TEST_PREFIX "${_name}."
                       PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
endforeach()
