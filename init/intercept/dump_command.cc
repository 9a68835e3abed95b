#include <iostream>

#include "intercept/cli.h"

namespace remora::intercept {

int runDumpCommand(const InitCommand&) {
  std::cerr << "remora-init: dump is not wired up yet\n";
  return 1;
}

}  // namespace remora::intercept
