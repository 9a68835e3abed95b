# Sanitizer and fuzzing builds (docs/TESTING.md). Each wants its own build directory:
#   cmake -B build-asan -DREMORA_SANITIZE=address,undefined
#   cmake -B build-tsan -DREMORA_SANITIZE=thread
#   CXX=clang++ CC=clang cmake -B build-fuzz -DREMORA_FUZZ=ON
# The flags apply to every target of the build, so the libraries the tests and fuzzers link are
# instrumented too.
set(REMORA_SANITIZE "" CACHE STRING
    "Sanitizers for every target, comma-separated: address,undefined or thread (empty: none)")
option(REMORA_FUZZ "Build the libFuzzer targets of test/fuzz (needs clang; implies ASan+UBSan)" OFF)

if(REMORA_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "REMORA_FUZZ needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang, found "
                        "${CMAKE_CXX_COMPILER_ID}")
  endif()
  if(REMORA_SANITIZE STREQUAL "")
    set(REMORA_SANITIZE "address,undefined")
  endif()
  # Coverage instrumentation everywhere; only the fuzz executables link libFuzzer's main
  # (-fsanitize=fuzzer, set in test/fuzz/CMakeLists.txt).
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

if(NOT REMORA_SANITIZE STREQUAL "")
  string(REPLACE "," ";" _remora_sanitizers "${REMORA_SANITIZE}")
  foreach(_s IN LISTS _remora_sanitizers)
    if(NOT _s MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "REMORA_SANITIZE: unknown sanitizer '${_s}'")
    endif()
  endforeach()
  if("thread" IN_LIST _remora_sanitizers AND "address" IN_LIST _remora_sanitizers)
    message(FATAL_ERROR "REMORA_SANITIZE: thread and address cannot be combined")
  endif()
  # -fno-sanitize-recover: a UBSan finding aborts the test instead of scrolling past.
  add_compile_options(-fsanitize=${REMORA_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${REMORA_SANITIZE})
  # The sanitizer runtimes cannot be linked -static, so remora-cni is linked like the rest
  # (cni/CMakeLists.txt's option; CMP0077 lets this plain variable set it).
  set(REMORA_CNI_STATIC OFF)
  message(STATUS "remora: sanitizers ${REMORA_SANITIZE}; remora-cni linked dynamically")
endif()
