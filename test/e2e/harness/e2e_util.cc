#include "e2e_util.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "netns_world.h"

namespace remora::test {

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

bool sendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

double cpuSeconds(pid_t pid) {
  std::string stat = readWholeFile("/proc/" + std::to_string(pid) + "/stat");
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 > stat.size()) return -1;
  std::istringstream in(stat.substr(close_paren + 2));
  std::string field;
  double ticks = 0;
  // Fields 14 and 15 of proc(5): utime and stime, in clock ticks.
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double metricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

std::string makeScratchDir(const std::string& name) {
  std::string tmpl = "/tmp/" + name + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return {};
  ::chmod(tmpl.c_str(), 0755);
  return tmpl;
}

void replaceFile(const std::string& path, const std::string& text) {
  const std::filesystem::path target(path);
  const std::string tmp = target.parent_path() / fmt::format(".{}.tmp", target.filename().string());
  std::ofstream(tmp) << text;
  ::chmod(tmp.c_str(), 0644);
  std::filesystem::rename(tmp, target);
}

std::string seedConfig(const std::string& weights_file) {
  const std::string dir = REMORA_HARNESS_SEED_DIR;
  std::string text = readWholeFile(dir + "/seed.yaml");
  if (weights_file.empty()) return text;
  return text + "\n---\n" + readWholeFile(dir + "/" + weights_file);
}

::testing::AssertionResult installCapture(NetnsWorld& world, const Pod& pod,
                                          const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {binaryPath("remora-init"), "install"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto out = world.exec(pod, argv);
  if (!out) return ::testing::AssertionFailure() << "remora-init install: " << out.error().message;
  if (out->exit_code != 0) {
    return ::testing::AssertionFailure()
           << "remora-init install exited " << out->exit_code << ": " << out->err << out->out;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace remora::test
