#include "plugin/plugin.h"

#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "plugin/cni_args.h"
#include "plugin/config.h"
#include "plugin/environment.h"
#include "plugin/log.h"
#include "plugin/state.h"
#include "plugin/version.h"

namespace remora::cni {
namespace {

using Logger = std::shared_ptr<spdlog::logger>;

// The cniVersion to put in an error when the config could not be fully parsed: the one on
// stdin if it is supported, else the newest.
std::string versionForErrors(std::string_view stdin_text) {
  auto j = parseJsonText(stdin_text);
  if (j && j->is_object() && j->contains("cniVersion") && (*j)["cniVersion"].is_string()) {
    std::string v = (*j)["cniVersion"].get<std::string>();
    if (requireSupportedVersion(v)) return v;
  }
  return std::string(kLatestVersion);
}

// Whether `netns` is the network namespace remora-cni itself runs in (on a node: the host's),
// by device and inode, whatever path names it (/proc/self/ns/net, /proc/thread-self/ns/net,
// /proc/1/ns/net from the host, a bind mount of it, ...).
bool isOwnNetns(const std::string& netns) {
  auto target = netnsIdentity(netns);
  if (!target) return false;
  for (const char* own : {"/proc/self/ns/net", "/proc/thread-self/ns/net"}) {
    if (netnsIdentity(own) == target) return true;
  }
  return false;
}

CniError ownNetnsError(const std::string& netns) {
  return CniError{ErrorCode::kInvalidEnvironment,
                  fmt::format("CNI_NETNS '{}' is remora-cni's own network namespace", netns),
                  "remora-cni installs interception only in a pod's namespace, never in the one "
                  "it runs in (on a node, the host's)"};
}

PluginOutput fail(const CniError& error, const std::string& version, const Logger& log) {
  log->error("{} (code {}){}{}", error.msg, static_cast<uint32_t>(error.code),
             error.details.empty() ? "" : ": ", error.details);
  return PluginOutput{1, errorJson(error, version) + "\n"};
}

class Invocation {
 public:
  Invocation(const Environment& env, const PluginConfig& config, Dataplane& dataplane, Logger log)
      : env_(env),
        config_(config),
        dataplane_(dataplane),
        log_(std::move(log)),
        state_(config.state_dir, config.name) {}

  CniResult<std::string> run() {
    switch (env_.command) {
      case Command::kAdd:
        return add();
      case Command::kDel:
        return del();
      case Command::kCheck:
        return check();
      case Command::kGc:
        return gc();
      case Command::kStatus:
        return status();
      case Command::kVersion:
        return version();
    }
    return std::string();
  }

 private:
  std::string who() const {
    return fmt::format("container={} ifname={} netns={}", env_.container_id, env_.ifname,
                       env_.netns.empty() ? "-" : env_.netns);
  }

  bool ebpfMode() const { return config_.options.mode == intercept::InterceptMode::kEbpf; }

  CniResult<MeshDecision> decide(const CniArgs& args) {
    auto decision = decideMesh(config_, args);
    if (decision && !decision->meshed) log_->info("{}: not meshed: {}", who(), decision->reason);
    return decision;
  }

  CniResult<std::string> add() {
    if (!config_.prev_result) {
      return CniError{ErrorCode::kInvalidConfig, "ADD needs prevResult",
                      "remora-cni is a chained plugin: list it after the interface plugin "
                      "(bridge, ptp, ...) in a .conflist's plugins"};
    }
    if (isOwnNetns(env_.netns)) return ownNetnsError(env_.netns);
    std::string result = config_.prev_result->dump() + "\n";
    auto args = parseCniArgs(env_.args);
    if (!args) return args.error();
    auto decision = decide(*args);
    if (!decision) return decision.error();
    if (!decision->meshed) return result;

    PodIdentity pod = podIdentity(*args);
    AttachmentState record;
    record.container_id = env_.container_id;
    record.ifname = env_.ifname;
    record.netns = env_.netns;
    record.pod_namespace = pod.namespace_name;
    record.pod_name = pod.name;
    if (auto id = netnsIdentity(env_.netns)) {
      record.netns_dev = id->first;
      record.netns_ino = id->second;
    } else {
      return CniError{ErrorCode::kNetnsUnavailable,
                      fmt::format("network namespace '{}' does not exist", env_.netns)};
    }
    if (ebpfMode()) {
      // The cookie is what DEL unregisters, even once the namespace is gone.
      auto cookie = dataplane_.netnsCookie(env_.netns);
      if (!cookie) return cookie.error();
      record.netns_cookie = *cookie;
    }
    // The record goes first, so that whatever the install leaves behind, DEL and GC know of it.
    if (auto saved = state_.save(record); !saved) {
      return CniError{ErrorCode::kIoFailure, "cannot record the attachment", saved.error().message};
    }
    auto report = dataplane_.install(
        env_.netns, optionsForPod(decision->options, config_.prev_result), config_.ebpf);
    if (!report) {
      if (auto removed = state_.remove(env_.container_id, env_.ifname); !removed) {
        log_->warn("{}: record left behind for DEL or GC: {}", who(), removed.error().message);
      }
      return report.error();
    }
    log_->info("{} pod={}/{}: interception installed ({}{})", who(),
               pod.namespace_name.empty() ? "-" : pod.namespace_name,
               pod.name.empty() ? "-" : pod.name, report->backend,
               report->changed ? "" : ", already in place");
    for (const auto& line : report->lines) log_->debug("  {}", line);
    return result;
  }

  CniResult<std::string> del() {
    auto record = state_.load(env_.container_id, env_.ifname);
    if (!record) log_->warn("{}: ignoring unreadable state: {}", who(), record.error().message);
    bool recorded = record && record->has_value();

    // DEL must clean up even with odd CNI_ARGS; a parse failure means "treat as meshed".
    bool meshed = true;
    auto args = parseCniArgs(env_.args);
    if (args) {
      auto decision = decideMesh(config_, *args);
      meshed = !decision || decision->meshed;
    }

    std::string netns = env_.netns;
    if (netns.empty() && recorded) {
      const AttachmentState& s = **record;
      auto id = netnsIdentity(s.netns);
      if (id && id->first == s.netns_dev && id->second == s.netns_ino) netns = s.netns;
    }

    if (ebpfMode() && recorded && (*record)->netns_cookie != 0) {
      // In the pod's netns while it is the one recorded (a hybrid's inbound rules live there);
      // once it is gone, by the netns cookie alone, which is all the node's maps need (the spec
      // wants DEL to succeed when the runtime has removed the netns already).
      const AttachmentState& s = **record;
      auto id = netnsIdentity(netns);
      CniResult<intercept::ApplyReport> report =
          CniError{ErrorCode::kNetnsUnavailable, "the recorded netns is gone"};
      if (id && id->first == s.netns_dev && id->second == s.netns_ino && !isOwnNetns(netns)) {
        report = dataplane_.uninstall(netns, config_.options, config_.ebpf);
      }
      if (!report && report.error().code == ErrorCode::kNetnsUnavailable) {
        report = dataplane_.uninstallEbpfCookie(s.netns_cookie, config_.ebpf);
      }
      if (!report) return report.error();
      log_->info("{}: netns cookie {} unregistered{}", who(), s.netns_cookie,
                 report->changed ? "" : " (none was left)");
    } else if (!netns.empty() && isOwnNetns(netns)) {
      // ADD never installs there, so there is nothing of remora-cni's to remove.
      log_->warn("{}: {}; nothing removed", who(), ownNetnsError(netns).msg);
    } else if ((recorded || meshed) && !netns.empty()) {
      auto report = dataplane_.uninstall(netns, config_.options, config_.ebpf);
      if (!report && report.error().code != ErrorCode::kNetnsUnavailable) return report.error();
      if (report) {
        log_->info("{}: interception removed{}", who(), report->changed ? "" : " (none was left)");
      } else {
        log_->info("{}: namespace is gone, nothing to remove ({})", who(), report.error().details);
      }
    } else {
      log_->debug("{}: nothing to remove", who());
    }
    if (auto removed = state_.remove(env_.container_id, env_.ifname); !removed) {
      return CniError{ErrorCode::kIoFailure, "cannot remove the attachment record",
                      removed.error().message};
    }
    return std::string();
  }

  CniResult<std::string> check() {
    if (!config_.prev_result) {
      return CniError{ErrorCode::kInvalidConfig, "CHECK needs prevResult",
                      "the runtime passes the result of the preceding ADD as prevResult"};
    }
    if (isOwnNetns(env_.netns)) return ownNetnsError(env_.netns);
    auto args = parseCniArgs(env_.args);
    if (!args) return args.error();
    auto decision = decide(*args);
    if (!decision) return decision.error();
    if (!decision->meshed) return std::string();
    auto checked = dataplane_.check(
        env_.netns, optionsForPod(decision->options, config_.prev_result), config_.ebpf);
    if (!checked) return checked.error();
    log_->debug("{}: interception intact", who());
    return std::string();
  }

  CniResult<std::string> gc() {
    std::vector<std::string> unreadable;
    auto records = state_.list(&unreadable);
    if (!records) {
      return CniError{ErrorCode::kIoFailure, "cannot list attachment records",
                      records.error().message};
    }
    std::vector<std::string> failures;
    // A record that cannot be read names no namespace to clean; it only blocks future GCs.
    for (const auto& path : unreadable) {
      log_->warn("GC: removing unreadable attachment record {}", path);
      if (auto gone = state_.discard(path); !gone) failures.push_back(gone.error().message);
    }
    size_t removed = 0;
    for (const auto& r : *records) {
      bool valid = false;
      for (const auto& a : *config_.valid_attachments) {
        if (a.container_id == r.container_id && (a.ifname.empty() || a.ifname == r.ifname)) {
          valid = true;
        }
      }
      if (valid) continue;
      // Only a namespace that is still the one recorded at ADD may be touched; eBPF mode needs
      // no namespace, only its cookie.
      auto id = netnsIdentity(r.netns);
      if (ebpfMode() && r.netns_cookie != 0) {
        auto report = dataplane_.uninstallEbpfCookie(r.netns_cookie, config_.ebpf);
        if (!report) {
          failures.push_back(fmt::format("{}:{}: {}: {}", r.container_id, r.ifname,
                                         report.error().msg, report.error().details));
          continue;
        }
      } else if (id && id->first == r.netns_dev && id->second == r.netns_ino &&
                 !isOwnNetns(r.netns)) {
        auto report = dataplane_.uninstall(r.netns, config_.options, config_.ebpf);
        if (!report && report.error().code != ErrorCode::kNetnsUnavailable) {
          failures.push_back(fmt::format("{}:{}: {}: {}", r.container_id, r.ifname,
                                         report.error().msg, report.error().details));
          continue;
        }
      }
      if (auto gone = state_.remove(r.container_id, r.ifname); !gone) {
        failures.push_back(gone.error().message);
        continue;
      }
      ++removed;
      log_->info("GC: removed stale attachment container={} ifname={}", r.container_id, r.ifname);
    }
    if (!failures.empty()) {
      return CniError{ErrorCode::kGcIncomplete,
                      fmt::format("GC could not clean up {} stale attachment(s)", failures.size()),
                      fmt::format("{}", fmt::join(failures, "; "))};
    }
    log_->debug("GC: {} stale attachment(s) removed", removed);
    return std::string();
  }

  CniResult<std::string> status() {
    if (auto ready = dataplane_.status(config_.options, config_.ebpf); !ready) return ready.error();
    if (auto writable = state_.ensureWritable(); !writable) {
      return CniError{ErrorCode::kStatusNotAvailable, "remora-cni cannot record attachments",
                      writable.error().message};
    }
    return std::string();
  }

  CniResult<std::string> version() { return versionResultJson(config_.cni_version) + "\n"; }

  const Environment& env_;
  const PluginConfig& config_;
  Dataplane& dataplane_;
  Logger log_;
  StateStore state_;
};

PluginOutput runChecked(const std::map<std::string, std::string>& env, std::string_view stdin_text,
                        Dataplane& dataplane) {
  auto started = std::chrono::steady_clock::now();
  auto environment = parseEnvironment(env);
  if (!environment) return fail(environment.error(), versionForErrors(stdin_text), stderrLog());
  auto config = parseConfig(stdin_text, environment->command);
  if (!config) return fail(config.error(), versionForErrors(stdin_text), stderrLog());

  Logger log = openPluginLog(config->log_file, config->log_level);
  Invocation invocation(*environment, *config, dataplane, log);
  auto result = invocation.run();
  if (!result) return fail(result.error(), config->cni_version, log);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();
  log->debug("{} {} done in {} us", toString(environment->command), environment->container_id,
             micros);
  return PluginOutput{0, std::move(*result)};
}

}  // namespace

PluginOutput runPlugin(const std::map<std::string, std::string>& env, std::string_view stdin_text,
                       Dataplane& dataplane) {
  try {
    return runChecked(env, stdin_text, dataplane);
  } catch (const std::exception& e) {
    return fail(CniError{ErrorCode::kInternalError, "remora-cni failed unexpectedly", e.what()},
                versionForErrors(stdin_text), stderrLog());
  }
}

}  // namespace remora::cni
