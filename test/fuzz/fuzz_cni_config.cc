// libFuzzer target: remora-cni's stdin parser (remora::cni::parseConfig) and what the plugin
// derives from a parsed config (CNI_ARGS, the mesh decision, the options for the pod), plus the
// error JSON the plugin prints when any of it fails.
//
// Input: one line, then the stdin bytes. The line's first character picks CNI_COMMAND
// (A ADD, D DEL, C CHECK, V VERSION, S STATUS, G GC; any other byte is taken modulo 6); the
// rest of the line is CNI_ARGS.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "plugin/cni_args.h"
#include "plugin/config.h"
#include "plugin/environment.h"
#include "plugin/error.h"

namespace rc = remora::cni;

namespace {

rc::Command commandFor(char c) {
  switch (c) {
    case 'A':
      return rc::Command::kAdd;
    case 'D':
      return rc::Command::kDel;
    case 'C':
      return rc::Command::kCheck;
    case 'V':
      return rc::Command::kVersion;
    case 'S':
      return rc::Command::kStatus;
    case 'G':
      return rc::Command::kGc;
    default:
      return static_cast<rc::Command>(static_cast<unsigned char>(c) % 6);
  }
}

// The plugin prints this for every failure; it must never throw.
void printError(const rc::CniError& error) { (void)rc::errorJson(error, "1.1.0"); }

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  rc::Command command = commandFor(input[0]);
  size_t eol = input.find('\n');
  std::string_view cni_args =
      eol == std::string_view::npos ? input.substr(1) : input.substr(1, eol - 1);
  std::string_view stdin_text = eol == std::string_view::npos ? "" : input.substr(eol + 1);

  auto args = rc::parseCniArgs(cni_args);
  if (!args) printError(args.error());

  auto config = rc::parseConfig(stdin_text, command);
  if (!config) {
    printError(config.error());
    return 0;
  }
  // ADD prints prevResult back as it came.
  if (config->prev_result) (void)config->prev_result->dump();
  if (!args) return 0;
  auto decision = rc::decideMesh(*config, *args);
  if (!decision) {
    printError(decision.error());
    return 0;
  }
  (void)rc::optionsForPod(decision->options, config->prev_result);
  return 0;
}
