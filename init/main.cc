#include <string>
#include <vector>

#include "intercept/cli.h"
#include "intercept/nftables_applier.h"

int main(int argc, char** argv) {
  remora::intercept::reuseFreedMemory();
  return remora::intercept::runInit(std::vector<std::string>(argv + 1, argv + argc));
}
