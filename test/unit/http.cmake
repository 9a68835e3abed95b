# remora_http (issue 10): the HTTP/1.1 codec's conformance table, split invariance, pipelining,
# serializers and local replies. libhttp-parser is linked as a second opinion on accepted input.
# Test names carry the "http_codec." prefix, so `ctest -R http_codec` selects them.
include(GoogleTest)
add_executable(http_codec_test ${CMAKE_CURRENT_LIST_DIR}/http_codec_test.cc)
target_link_libraries(http_codec_test PRIVATE remora_http http_parser::http_parser
  GTest::gtest GTest::gtest_main)
gtest_discover_tests(http_codec_test TEST_PREFIX "http_codec." PROPERTIES LABELS unit
  DISCOVERY_TIMEOUT 30)

# Codec cost per request, side by side with libhttp-parser (label bench, not run by default):
# ctest --test-dir BUILD -R bench.http_codec -V
add_executable(http-codec-bench ${PROJECT_SOURCE_DIR}/test/bench/http_codec_bench.cc)
target_link_libraries(http-codec-bench PRIVATE remora_http http_parser::http_parser)
add_test(NAME bench.http_codec COMMAND http-codec-bench --seconds 1)
set_tests_properties(bench.http_codec PROPERTIES LABELS bench RUN_SERIAL TRUE TIMEOUT 120)
