#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace remora {

struct CommandOutput {
  int exit_code = 0;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] (looked up in PATH) with `input` on its stdin and collects stdout and stderr.
// Fails only when the program cannot be started; a non-zero exit is reported in exit_code.
Result<CommandOutput> runCommand(const std::vector<std::string>& argv,
                                 const std::string& input = {});

// Whether `program` is an executable found in PATH.
bool programInPath(const std::string& program);

}  // namespace remora
