#include <string>
#include <vector>

#include "intercept/cli.h"

int main(int argc, char** argv) {
  return remora::intercept::runInit(std::vector<std::string>(argv + 1, argv + argc));
}
