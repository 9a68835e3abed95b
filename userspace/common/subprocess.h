#pragma once

#include <chrono>
#include <optional>
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

// The same with a deadline: the child runs in a process group of its own, and when it has not
// exited `timeout` after it started, the whole group is sent SIGKILL and reaped, and the error
// is ETIMEDOUT with a message naming the program and the timeout. No timeout: wait forever.
Result<CommandOutput> runCommand(const std::vector<std::string>& argv, const std::string& input,
                                 std::optional<std::chrono::milliseconds> timeout);

// "1 s", "2.5 s", "300 ms": a timeout as messages print it.
std::string formatTimeout(std::chrono::milliseconds timeout);

// Whether `program` is an executable found in PATH.
bool programInPath(const std::string& program);

}  // namespace remora
