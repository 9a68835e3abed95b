# remora_http (issue 10): the HTTP/1.1 codec's conformance table, split invariance, pipelining,
# serializers and local replies. libhttp-parser is linked as a second opinion on accepted input.
# Test names carry the "http_codec." prefix, so `ctest -R http_codec` selects them.
include(GoogleTest)
add_executable(http_codec_test ${CMAKE_CURRENT_LIST_DIR}/http_codec_test.cc)
target_link_libraries(http_codec_test PRIVATE remora_http http_parser::http_parser
  GTest::gtest GTest::gtest_main)
gtest_discover_tests(http_codec_test TEST_PREFIX "http_codec." PROPERTIES LABELS unit
  DISCOVERY_TIMEOUT 30)
