#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "netns_world.h"

namespace remora::test {

// Small helpers the e2e tests share.

// How many times `needle` occurs in `text` (overlapping occurrences count).
size_t countOf(const std::string& text, const std::string& needle);

// Polls `pred` every poll_ms until it holds or timeout_ms passes; its last value.
template <typename Pred>
bool waitFor(Pred pred, int timeout_ms = 5000, int poll_ms = 50) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return pred();
}

// Sends all of `data` (MSG_NOSIGNAL); false when the connection fails first.
bool sendAll(int fd, std::string_view data);

// CPU seconds (user + system) the process has used, from /proc/PID/stat; -1 when unreadable.
double cpuSeconds(pid_t pid);

// The value of the Prometheus sample `name` (the first line of `text` that starts with
// `name` and a space), or -1 when there is none.
double metricValue(const std::string& text, const std::string& name);

// A fresh directory /tmp/NAME-XXXXXX with mode 0755 (the proxy runs as uid 1337 and reads what
// the test writes there); "" when it cannot be made.
std::string makeScratchDir(const std::string& name);

// Replaces the file at `path` atomically with `text`, mode 0644: written to a hidden temporary
// beside it, then renamed over it, as an editor or a ConfigMap update does.
void replaceFile(const std::string& path, const std::string& text);

// The seed scenario's config (test/fixtures/seed/seed.yaml), with the fixture `weights_file`
// (e.g. "istio-90-10.yaml") appended as a further YAML document when given.
std::string seedConfig(const std::string& weights_file = {});

// Runs `remora-init install` (with `extra` flags) in the pod; a failure says why.
::testing::AssertionResult installCapture(NetnsWorld& world, const Pod& pod,
                                          const std::vector<std::string>& extra = {});

}  // namespace remora::test
