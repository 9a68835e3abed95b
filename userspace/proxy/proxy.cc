#include "proxy/proxy.h"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "loop/user_data.h"
#include "proxy/admin.h"
#include "proxy/ebpf_fast_path.h"
#include "proxy/log_sink.h"
#include "proxy/socket_ops.h"
#include "proxy/stats.h"
#include "routing/static_route_table.h"

namespace remora::proxy {

routing::ProxySettings effectiveSettings(const routing::ProxySettings& from_config,
                                         const SettingOverrides& o) {
  routing::ProxySettings s = from_config;
  if (o.outbound_listen) s.outbound_listen = *o.outbound_listen;
  if (o.inbound_listen) s.inbound_listen = *o.inbound_listen;
  if (o.admin_listen) s.admin_listen = *o.admin_listen;
  if (o.inbound_source) s.inbound_source = *o.inbound_source;
  if (o.inbound_transparent) s.inbound_transparent = *o.inbound_transparent;
  if (o.outbound_policy) s.outbound_policy = *o.outbound_policy;
  if (o.connect_timeout) s.connect_timeout = *o.connect_timeout;
  if (o.drain_timeout) s.drain_timeout = *o.drain_timeout;
  if (o.max_connect_attempts) s.max_connect_attempts = *o.max_connect_attempts;
  if (o.access_log) s.access_log = *o.access_log;
  if (o.buffer_limit_bytes) s.buffer_limit_bytes = *o.buffer_limit_bytes;
  if (o.idle_timeout) s.idle_timeout = *o.idle_timeout;
  if (o.half_close_timeout) s.half_close_timeout = *o.half_close_timeout;
  if (o.max_connection_duration) s.max_connection_duration = *o.max_connection_duration;
  if (o.max_connections) s.max_connections = *o.max_connections;
  if (o.tcp_keepalive) s.tcp_keepalive = *o.tcp_keepalive;
  if (o.inbound_drain_grace) s.inbound_drain_grace = *o.inbound_drain_grace;
  if (o.relay) s.relay = *o.relay;
  if (o.protocol_detection_timeout) s.protocol_detection_timeout = *o.protocol_detection_timeout;
  if (o.path_normalization) s.path_normalization = *o.path_normalization;
  if (o.tls_dir) s.tls_dir = *o.tls_dir;
  if (o.trust_domain) s.trust_domain = *o.trust_domain;
  return s;
}

WorkerSettings workerSettings(const routing::ProxySettings& s) {
  WorkerSettings w;
  w.outbound_policy = s.outbound_policy;
  w.connect_timeout = s.connect_timeout;
  w.max_connect_attempts = std::max(1, s.max_connect_attempts);
  if (s.inbound_source.family == Family::kIpv6) {
    w.inbound_source_v6 = s.inbound_source;
  } else {
    w.inbound_source_v4 = s.inbound_source;
  }
  w.inbound_transparent = s.inbound_transparent;
  w.access_log = s.access_log;
  // At least one receive buffer's worth, or a direction could never hold a whole chunk.
  w.buffer_limit = std::max<uint64_t>(s.buffer_limit_bytes, 4096);
  w.idle_timeout = s.idle_timeout;
  w.half_close_timeout = s.half_close_timeout;
  w.max_connection_duration = s.max_connection_duration;
  w.max_connections = s.max_connections;
  w.protocol_detection_timeout = s.protocol_detection_timeout;
  w.path_normalization = s.path_normalization;
  // The maps come from resolveRelay; whether a pair waits for HandoverRule is the mode's.
  auto relay = parseRelayMode(s.relay);
  w.relay_adaptive = relay && *relay == RelayMode::kAuto;
  return w;
}

bool isConfigEvent(std::string_view name, std::string_view config_basename) {
  return name == config_basename || name == "..data";
}

bool isEmptyConfig(std::string_view text) {
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    const size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string_view::npos) continue;  // blank
    line = line.substr(start);
    if (line[0] == '#') continue;
    // Document markers, alone or followed by a comment.
    for (std::string_view marker : {"---", "..."}) {
      if (line.substr(0, 3) == marker) line = line.substr(3);
    }
    const size_t rest = line.find_first_not_of(" \t\r");
    if (rest != std::string_view::npos && line[rest] != '#') return false;
  }
  return true;
}

ConfigRead readConfigFile(const std::string& path) {
  ConfigRead out;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    out.error = fmt::format("cannot read {}: {}", path, std::strerror(errno));
    return out;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    out.error = fmt::format("cannot read {}: {}", path, std::strerror(errno));
    return out;
  }
  out.ok = true;
  out.text = ss.str();
  return out;
}

ConfigRead readSettled(const std::string& path, std::chrono::milliseconds interval, int max_reads) {
  ConfigRead last = readConfigFile(path);
  for (int i = 1; i < max_reads; ++i) {
    std::this_thread::sleep_for(interval);
    ConfigRead next = readConfigFile(path);
    if (next == last) break;
    last = std::move(next);
  }
  return last;
}

namespace {

using loop::Completion;
using loop::UserData;

enum class ControlOp : uint8_t {
  kIgnore = 0,
  kSignal,
  kInotify,
  kWorkerDone,
  kDrainTimer,
  kSettle,        // config reload: time to read the file again (see requestReload)
  kInboundGrace,  // sidecar drain: the inbound listeners close
  kDrainPoll,     // sidecar drain: outbound closes once no connection is left
};

uint64_t controlTag(ControlOp op, uint32_t slot = 0, uint32_t generation = 0) {
  return UserData{static_cast<uint8_t>(op), slot, generation}.encode();
}

const char* policyName(routing::OutboundPolicy p) {
  return p == routing::OutboundPolicy::kRegistryOnly ? "REGISTRY_ONLY" : "ALLOW_ANY";
}

std::vector<SocketAddress> listenAddresses(const SocketAddress& at, bool ipv6) {
  std::vector<SocketAddress> out{at};
  if (ipv6 && at.ip.family == Family::kIpv4 && at.ip == IpAddress{}) {
    out.push_back(SocketAddress{*IpAddress::parse("::"), at.port});
  }
  return out;
}

// Commands from the control thread to a worker; the worker takes them when its eventfd fires.
struct WorkerCommand {
  bool has_table = false;
  std::shared_ptr<const routing::RouteTable> table;
  WorkerSettings settings;
  bool close_inbound = false;  // sidecar drain, first step: inbound stops accepting
  bool drain = false;          // every listener closes; the worker ends once idle
  bool stop = false;           // reset what is still open and end
};

struct WorkerThread {
  int wake_fd = -1;
  std::mutex mu;
  WorkerCommand pending;
  WorkerStats stats;
  std::thread thread;
  std::atomic<bool> finished{false};
  std::atomic<bool> ring_fallback{false};  // its ring runs with fallback setup flags

  template <typename Fn>
  void post(Fn&& modify) {
    {
      std::lock_guard<std::mutex> lock(mu);
      modify(pending);
    }
    uint64_t one = 1;
    if (::write(wake_fd, &one, sizeof(one)) < 0)
      spdlog::error("wake worker: {}", std::strerror(errno));
  }
};

struct WorkerStart {
  const ProxyOptions* options;
  routing::ProxySettings settings;
  std::shared_ptr<const routing::RouteTable> table;
  RouterFactory routers;
  int done_fd;
  unsigned index;
  std::shared_ptr<const RelayMaps> kernel_relay;
  std::shared_ptr<tls::IdentityStore> identity;
};

// A worker's whole life, on its own thread: its ring must be created here (SINGLE_ISSUER).
void workerMain(WorkerThread& wt, WorkerStart start, std::promise<Result<void>> ready) {
  auto ring = loop::UringRing::create(start.options->ring);
  if (!ring) {
    ready.set_value(ring.error());
    return;
  }
  // The control ring already logged the same refusal once; workers only count theirs.
  if (!(*ring)->fallbackNote().empty()) wt.ring_fallback.store(true);
  const auto keepalive =
      std::chrono::duration_cast<std::chrono::seconds>(start.settings.tcp_keepalive);
  SystemSocketOps sockets(keepalive);
  WorkerSettings settings = workerSettings(start.settings);
  settings.kernel_relay = start.kernel_relay;
  Worker worker(**ring, sockets, wt.stats, start.routers, settings);
  worker.setIndex(start.index);
  // Always wired: WorkerSettings::access_log decides per connection, so a reload toggles it.
  // The lines go through the log sink's queue (log_sink.h); the worker never waits for stdout.
  worker.setAccessLog([](std::string line) { return pushAccessLine(std::move(line)); });
  worker.setIdentity(start.identity);
  struct Spec {
    SocketAddress at;
    ListenerKind kind;
  };
  std::vector<Spec> specs;
  for (const auto& a : listenAddresses(start.settings.outbound_listen, start.options->ipv6)) {
    specs.push_back({a, ListenerKind::kOutbound});
  }
  for (const auto& a : listenAddresses(start.settings.inbound_listen, start.options->ipv6)) {
    specs.push_back({a, ListenerKind::kInbound});
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const bool transparent =
        specs[i].kind == ListenerKind::kInbound && start.settings.inbound_transparent;
    auto fd = openListener(specs[i].at, 4096, transparent);
    if (!fd) {
      const bool optional_v6 = specs[i].at.ip.family == Family::kIpv6 && i > 0 &&
                               specs[i - 1].at.ip.family == Family::kIpv4;
      if (optional_v6 && (fd.error().code == EAFNOSUPPORT || fd.error().code == EADDRNOTAVAIL)) {
        if (start.index == 0) spdlog::info("no IPv6 here, skipping {}", specs[i].at.toString());
        continue;
      }
      ready.set_value(fd.error());
      return;
    }
    setKeepalive(*fd, keepalive);  // accepted sockets inherit it
    worker.addListener(*fd, specs[i].kind, specs[i].at.ip.family);
  }
  worker.setTable(start.table, settings);
  bool draining = false;
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  worker.watchControl(wt.wake_fd, [&] {
    WorkerCommand cmd;
    {
      std::lock_guard<std::mutex> lock(wt.mu);
      cmd = std::move(wt.pending);
      wt.pending = WorkerCommand{};
    }
    if (cmd.has_table) worker.setTable(std::move(cmd.table), cmd.settings);
    if (cmd.close_inbound) worker.stopAccepting(ListenerKind::kInbound);
    if ((cmd.drain || cmd.stop) && !draining) {
      draining = true;
      worker.stopAccepting();
    }
    if (cmd.stop && !stopping) {
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      worker.abortAll();
    }
  });
  ready.set_value(Result<void>{});
  while (true) {
    auto r = (*ring)->submitAndDispatch(
        worker, stopping ? std::chrono::milliseconds(50) : std::chrono::milliseconds(-1));
    if (!r) {
      spdlog::error("worker {}: {}", start.index, r.error().message);
      break;
    }
    if (draining && worker.quiescent()) break;
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) break;
  }
  wt.finished.store(true);
  uint64_t one = 1;
  if (::write(start.done_fd, &one, sizeof(one)) < 0)
    spdlog::error("worker done: {}", std::strerror(errno));
}

class Control final : public loop::CompletionHandler {
 public:
  Control(const ProxyOptions& options, TableLoader loader, RouterFactory routers)
      : options_(options), loader_(std::move(loader)), routers_(std::move(routers)) {}
  ~Control() override;
  int run();

  void onCompletion(const Completion& c) override;

 private:
  int startWorkers();
  void stopWorkers();
  // A config event or SIGHUP (`forced`: load even an unchanged file): the file is read again
  // once it has been quiet for kSettleDelay, and loaded when two reads kSettleDelay apart, with
  // no event between them, agree. A writer that rewrites the file in place is seen whole.
  void requestReload(bool forced);
  void onSettle();
  bool load(const ConfigRead& read, bool force);
  void logFindings();
  void beginDrain(bool exit_after);
  void closeAllListeners();
  size_t activeConnections() const;
  void checkWorkersDone();
  void armRead(ControlOp op, int fd, std::span<char> into) {
    ring_->read(fd, into, controlTag(op));
  }
  void onSignal(const Completion& c);
  void onInotify(const Completion& c);
  bool ready() const {
    return !draining_ && workers_started_ && (options_.config_path.empty() || table_);
  }
  StatsSnapshot snapshot() const;
  nlohmann::json configDump() const;
  std::string clusters() const;

  const ProxyOptions& options_;
  TableLoader loader_;
  RouterFactory routers_;
  // Declared before ring_ so that it is destroyed after it: the admin connections' buffers
  // must outlive every read the ring may still have pending into them.
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<loop::UringRing> ring_;
  routing::ProxySettings settings_;
  std::shared_ptr<const routing::RouteTable> table_;
  std::string last_text_;
  std::set<std::string> logged_findings_;  // each finding is logged once, when it appears
  uint64_t generation_ = 0;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
  bool last_reload_ok_ = true;
  std::string last_error_;
  uint64_t setup_fallbacks_ = 0;
  // The relay of pure L4 routes (kernel_relay.h): the pinned maps once opened, what is in use
  // and why the kernel relay is not, and how often `auto` fell back to the io_uring relay.
  // The workload identity: ProxyOptions::identity when the embedder gave one, else made at
  // start from the effective tls_dir (--tls-dir over ProxyConfig spec.tlsDir). A missing or
  // expired certificate is logged and counted, never fatal: the watcher picks up fixed files,
  // and until then mTLS connections fail with a clear reason.
  std::shared_ptr<tls::IdentityStore> identity_;
  void startIdentity() {
    identity_ = options_.identity;
    if (identity_ || settings_.tls_dir.empty()) return;
    identity_ = std::make_shared<tls::IdentityStore>(settings_.tls_dir, settings_.trust_domain);
    (void)identity_->reload();
    identity_->watch(std::chrono::milliseconds(500));
    spdlog::info("mTLS credentials from {} (trust domain {})", settings_.tls_dir,
                 settings_.trust_domain);
  }
  std::shared_ptr<const RelayMaps> relay_maps_;
  std::string relay_in_use_;
  std::string relay_error_;
  bool relay_not_installed_ = false;  // the relay's pins are not there (ENOENT)
  // eBPF mode's fast path is on in this netns: the kernel relay is never used (checked at start).
  bool fast_path_excludes_relay_ = false;
  uint64_t relay_fallbacks_ = 0;
  // Resolves settings_.relay for new connections; logs when what is in use changes.
  Result<std::shared_ptr<const RelayMaps>> resolveRelay();

  // Declared before workers_: it outlives the workers that push into it.
  std::vector<std::unique_ptr<WorkerThread>> workers_;
  bool workers_started_ = false;
  int done_fd_ = -1;
  uint64_t done_value_ = 0;
  int signal_fd_ = -1;
  signalfd_siginfo siginfo_{};
  int inotify_fd_ = -1;
  // A file watched through its directory: editors, ConfigMap and downward API volumes replace
  // the file (or the ..data symlink) by rename, which a watch on the old inode would never see.
  // IN_MODIFY too: each write of an in-place rewrite restarts the settling.
  struct DirectoryWatch {
    int wd = -1;  // -1: not watched (errno says why)
    std::string dir;
    std::string base;  // the file's name in `dir`
  };
  DirectoryWatch watchDirectoryOf(const std::string& path) const {
    DirectoryWatch w;
    auto slash = path.rfind('/');
    w.dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    w.base = slash == std::string::npos ? path : path.substr(slash + 1);
    if (inotify_fd_ >= 0) {
      w.wd = inotify_add_watch(inotify_fd_, w.dir.c_str(),
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY);
    }
    return w;
  }
  DirectoryWatch config_watch_;
  // The pod labels file's directory (a downward API volume swaps its ..data symlink when the
  // pod's labels change), watched like the config's: a change reloads the config.
  DirectoryWatch labels_watch_;
  void watchLabelsFile() {
    const std::string& path = settings_.workload.labels_file;
    if (path.empty() || inotify_fd_ < 0) return;
    labels_watch_ = watchDirectoryOf(path);
    if (labels_watch_.wd < 0) {
      spdlog::warn("cannot watch {} ({}); after a labels change, reload with SIGHUP",
                   labels_watch_.dir, std::strerror(errno));
    }
  }
  alignas(inotify_event) std::array<char, 4096> inotify_buf_{};
  bool settle_armed_ = false;
  bool settle_dirty_ = false;  // an event or SIGHUP since the last read
  bool reload_forced_ = false;
  std::optional<ConfigRead> settle_candidate_;

  bool draining_ = false;
  bool listeners_closed_ = false;
  bool exit_when_drained_ = false;
  bool exit_ = false;
};

Control::~Control() {
  for (int fd : {done_fd_, signal_fd_, inotify_fd_}) {
    if (fd >= 0) ::close(fd);
  }
  for (auto& w : workers_) {
    if (w->wake_fd >= 0) ::close(w->wake_fd);
  }
}

int Control::run() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  // Blocked before any thread starts, so every thread inherits the mask and the signals reach
  // the control ring's signalfd only.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  loop::RingOptions control_ring;
  control_ring.sq_entries = 64;
  control_ring.cq_entries = 512;
  control_ring.buffer_count = 0;
  auto ring = loop::UringRing::create(control_ring);
  if (!ring) {
    spdlog::critical("{}", ring.error().message);
    return 2;
  }
  ring_ = std::move(*ring);
  if (!ring_->fallbackNote().empty()) {
    spdlog::warn("io_uring degraded: {}", ring_->fallbackNote());
    ++setup_fallbacks_;
  }

  if (!options_.config_path.empty()) {
    inotify_fd_ = inotify_init1(IN_CLOEXEC);
    config_watch_ = watchDirectoryOf(options_.config_path);
    if (config_watch_.wd < 0) {
      spdlog::warn("cannot watch {} ({}); reload with SIGHUP", config_watch_.dir,
                   std::strerror(errno));
    }
    load(readSettled(options_.config_path, kSettleDelay, 50), true);
  }
  settings_ =
      effectiveSettings(table_ ? table_->settings() : routing::ProxySettings{}, options_.overrides);
  watchLabelsFile();
  startIdentity();

  const AdminLimits admin_limits;
  auto admin = openListener(settings_.admin_listen, static_cast<int>(admin_limits.max_connections));
  if (!admin) {
    spdlog::critical("admin: {}", admin.error().message);
    return 1;
  }
  AdminHooks hooks;
  hooks.ready = [this] { return ready(); };
  hooks.prometheus = [this] {
    return renderPrometheus(snapshot()) + admin_->renderPrometheus() + renderTlsPrometheus();
  };
  hooks.config_dump = [this] { return configDump(); };
  hooks.clusters = [this] { return clusters(); };
  hooks.drain = [this] { beginDrain(false); };
  hooks.quit = [this] { beginDrain(true); };
  admin_ = std::make_unique<AdminServer>(*ring_, std::move(hooks), admin_limits);

  if (int rc = startWorkers(); rc != 0) return rc;

  signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC);
  if (signal_fd_ < 0) {
    spdlog::critical("signalfd: {}", std::strerror(errno));
    stopWorkers();
    return 1;
  }
  armRead(ControlOp::kSignal, signal_fd_, {reinterpret_cast<char*>(&siginfo_), sizeof(siginfo_)});
  armRead(ControlOp::kWorkerDone, done_fd_,
          {reinterpret_cast<char*>(&done_value_), sizeof(done_value_)});
  if (inotify_fd_ >= 0) armRead(ControlOp::kInotify, inotify_fd_, inotify_buf_);
  admin_->start(*admin);

  spdlog::info(
      "remora-proxy started: outbound {} inbound {} admin {} workers {} policy {} config "
      "generation {}",
      settings_.outbound_listen.toString(), settings_.inbound_listen.toString(),
      settings_.admin_listen.toString(), options_.concurrency,
      policyName(settings_.outbound_policy), generation_);

  while (!exit_) {
    auto r = ring_->submitAndDispatch(*this, std::chrono::milliseconds(-1));
    if (!r) {
      spdlog::critical("control ring: {}", r.error().message);
      stopWorkers();
      return 1;
    }
  }
  stopWorkers();
  spdlog::info("remora-proxy exiting");
  return 0;
}

int Control::startWorkers() {
  done_fd_ = eventfd(0, EFD_CLOEXEC);
  if (done_fd_ < 0) {
    spdlog::critical("eventfd: {}", std::strerror(errno));
    return 1;
  }
  auto relay = resolveRelay();
  if (!relay) {
    spdlog::critical("{}", relay.error().message);
    return 1;
  }
  for (unsigned i = 0; i < std::max(1u, options_.concurrency); ++i) {
    auto wt = std::make_unique<WorkerThread>();
    wt->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (wt->wake_fd < 0) {
      spdlog::critical("eventfd: {}", std::strerror(errno));
      stopWorkers();
      return 1;
    }
    std::promise<Result<void>> promise;
    auto started = promise.get_future();
    WorkerStart start{&options_, settings_, table_, routers_, done_fd_, i, *relay, identity_};
    WorkerThread& ref = *wt;
    wt->thread = std::thread(workerMain, std::ref(ref), std::move(start), std::move(promise));
    workers_.push_back(std::move(wt));
    Result<void> result = started.get();
    if (!result) {
      spdlog::critical("worker {}: {}", i, result.error().message);
      stopWorkers();
      // io_uring errors carry the explanation; a listener error is a plain startup failure.
      return result.error().message.find("io_uring") != std::string::npos ? 2 : 1;
    }
  }
  workers_started_ = true;
  return 0;
}

void Control::stopWorkers() {
  for (auto& w : workers_) {
    if (w->thread.joinable() && !w->finished.load()) {
      w->post([](WorkerCommand& c) { c.stop = true; });
    }
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

void Control::requestReload(bool forced) {
  reload_forced_ = reload_forced_ || forced;
  settle_dirty_ = true;
  if (!settle_armed_) {
    ring_->timeout(kSettleDelay, controlTag(ControlOp::kSettle));
    settle_armed_ = true;
  }
}

void Control::onSettle() {
  settle_armed_ = false;
  ConfigRead now = readConfigFile(options_.config_path);
  if (!settle_dirty_ && settle_candidate_ && now == *settle_candidate_) {
    settle_candidate_.reset();
    const bool forced = reload_forced_;
    reload_forced_ = false;
    load(now, forced);
    return;
  }
  if (settle_candidate_) SPDLOG_DEBUG("config file still changing; reading it again");
  settle_dirty_ = false;
  settle_candidate_ = std::move(now);
  ring_->timeout(kSettleDelay, controlTag(ControlOp::kSettle));
  settle_armed_ = true;
}

bool Control::load(const ConfigRead& read, bool force) {
  const std::string& text = read.text;
  if (!force && read.ok && table_ && text == last_text_) return false;  // touched, not changed
  Result<std::shared_ptr<const routing::RouteTable>> loaded = makeError(read.error);
  if (read.ok && isEmptyConfig(text) && !options_.allow_empty_config) {
    // Most often a file caught between truncation and write. Loading it would pass every
    // connection through, and each failed passthrough connect would leave a conntrack entry
    // that keeps later app connections from the same port from being redirected (PROXY.md,
    // "Reloads").
    loaded = makeError(fmt::format(
        "{} holds no YAML document; refused, since an empty config would pass every connection "
        "through (--allow-empty-config accepts one)",
        options_.config_path));
  } else if (read.ok) {
    // The loader reports errors as values; a stray exception from a YAML library must still
    // only reject this config, never take the proxy down.
    try {
      // The workload flags are the base: the builder holds sourceLabels, sourceNamespace and
      // workloadSelector against them, and reads the labels file again now.
      routing::ProxySettings base;
      base.workload = options_.overrides.workload;
      loaded = loader_(text, generation_ + 1, base);
    } catch (const std::exception& e) {
      loaded = makeError(fmt::format("config loader failed: {}", e.what()));
    }
  }
  if (!loaded) {
    ++reload_failures_;
    last_reload_ok_ = false;
    last_error_ = loaded.error().message;
    spdlog::error("config rejected{}: {}",
                  table_ ? fmt::format(" (generation {} keeps serving)", generation_) : "",
                  last_error_);
    return false;
  }
  table_ = std::move(*loaded);
  logFindings();
  last_text_ = text;
  ++generation_;
  ++reloads_;
  last_reload_ok_ = true;
  last_error_.clear();
  if (workers_started_) {
    routing::ProxySettings next = effectiveSettings(table_->settings(), options_.overrides);
    if (next.outbound_listen != settings_.outbound_listen ||
        next.inbound_listen != settings_.inbound_listen ||
        next.admin_listen != settings_.admin_listen ||
        next.inbound_transparent != settings_.inbound_transparent) {
      spdlog::warn(
          "listen addresses or inboundInterceptionMode changed in the config; they take effect "
          "on restart");
      next.inbound_transparent = settings_.inbound_transparent;
      next.outbound_listen = settings_.outbound_listen;
      next.inbound_listen = settings_.inbound_listen;
      next.admin_listen = settings_.admin_listen;
    }
    if (next.tls_dir != settings_.tls_dir || next.trust_domain != settings_.trust_domain) {
      spdlog::warn("tlsDir or trustDomain changed in the config; they take effect on restart");
      next.tls_dir = settings_.tls_dir;
      next.trust_domain = settings_.trust_domain;
    }
    settings_ = next;
    WorkerSettings ws = workerSettings(settings_);
    // An unavailable kernel relay asked for by the new config is logged; the proxy keeps going.
    auto relay = resolveRelay();
    if (relay) ws.kernel_relay = *relay;
    for (auto& w : workers_) {
      if (w->finished.load()) continue;
      w->post([&](WorkerCommand& c) {
        c.has_table = true;
        c.table = table_;
        c.settings = ws;
      });
    }
  }
  spdlog::info("config generation {} in force", generation_);
  return true;
}

// Logs each finding of the new table that the last one did not have, once, at its severity:
// the log says what changed about the config's fidelity, not the same list on every reload.
void Control::logFindings() {
  std::set<std::string> now;
  for (const auto& f : table_->findings()) {
    now.insert(f.text);
    if (logged_findings_.count(f.text) != 0) continue;
    switch (f.severity) {
      case Severity::kError:
        spdlog::error("config: {}", f.text);
        break;
      case Severity::kWarning:
        spdlog::warn("config: {}", f.text);
        break;
      case Severity::kInfo:
        spdlog::info("config: {}", f.text);
        break;
    }
  }
  logged_findings_ = std::move(now);
}

// POST /drain closes every listener at once. SIGTERM and /quitquitquit drain as a sidecar
// must: /ready turns 503 at once; inbound keeps accepting for inbound_drain_grace (peers are
// still learning that this pod is going); outbound keeps accepting until the app's connections
// are gone or the drain deadline, because the app may still call out while it shuts down. At
// the deadline, what is still open is reset.
void Control::beginDrain(bool exit_after) {
  if (!draining_) {
    draining_ = true;
    if (exit_after) {
      spdlog::info(
          "draining: /ready is 503; inbound closes in {} ms, outbound once no connection is "
          "left, at the latest in {} ms",
          settings_.inbound_drain_grace.count(), settings_.drain_timeout.count());
    } else {
      spdlog::info("draining: listeners closed, no deadline to finish open connections");
    }
  }
  if (!exit_after) {
    closeAllListeners();
    return;
  }
  if (!exit_when_drained_) {
    exit_when_drained_ = true;
    ring_->timeout(settings_.drain_timeout, controlTag(ControlOp::kDrainTimer));
    if (!listeners_closed_) {
      ring_->timeout(settings_.inbound_drain_grace, controlTag(ControlOp::kInboundGrace));
    }
    checkWorkersDone();
  }
}

void Control::closeAllListeners() {
  if (listeners_closed_) return;
  listeners_closed_ = true;
  for (auto& w : workers_) {
    if (!w->finished.load()) w->post([](WorkerCommand& c) { c.drain = true; });
  }
}

size_t Control::activeConnections() const {
  size_t n = 0;
  for (const auto& w : workers_) {
    const WorkerCounters& c = w->stats.counters();
    const uint64_t accepted = c.accepted.get();
    n += accepted - std::min(accepted, c.closed.get());
  }
  return n;
}

void Control::checkWorkersDone() {
  if (!exit_when_drained_) return;
  for (auto& w : workers_) {
    if (!w->finished.load()) return;
  }
  exit_ = true;
}

void Control::onCompletion(const Completion& c) {
  if (c.user_data == loop::kIgnoredUserData) return;
  if (AdminServer::owns(c.user_data)) {
    admin_->onCompletion(c);
    return;
  }
  const UserData ud = UserData::decode(c.user_data);
  const auto op = static_cast<ControlOp>(ud.op);
  switch (op) {
    case ControlOp::kSignal:
      onSignal(c);
      break;
    case ControlOp::kInotify:
      onInotify(c);
      break;
    case ControlOp::kWorkerDone:
      checkWorkersDone();
      armRead(ControlOp::kWorkerDone, done_fd_,
              {reinterpret_cast<char*>(&done_value_), sizeof(done_value_)});
      break;
    case ControlOp::kInboundGrace:
      if (!listeners_closed_) {
        spdlog::info("draining: inbound listeners closed; outbound stays open");
        for (auto& w : workers_) {
          if (!w->finished.load()) w->post([](WorkerCommand& cmd) { cmd.close_inbound = true; });
        }
      }
      [[fallthrough]];
    case ControlOp::kDrainPoll:
      if (listeners_closed_) break;
      if (activeConnections() == 0) {
        spdlog::info("draining: no connection left; closing the outbound listeners");
        closeAllListeners();
      } else {
        ring_->timeout(std::chrono::milliseconds(100), controlTag(ControlOp::kDrainPoll));
      }
      break;
    case ControlOp::kDrainTimer:
      if (c.res == -ETIME) {
        spdlog::warn("drain timeout: resetting the connections still open");
        for (auto& w : workers_) {
          if (!w->finished.load()) w->post([](WorkerCommand& cmd) { cmd.stop = true; });
        }
      }
      break;
    case ControlOp::kSettle:
      onSettle();
      break;
    default:
      break;
  }
}

void Control::onSignal(const Completion& c) {
  if (c.res == static_cast<int>(sizeof(siginfo_))) {
    int sig = static_cast<int>(siginfo_.ssi_signo);
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading {}", options_.config_path);
      if (!options_.config_path.empty()) requestReload(true);
    } else {
      spdlog::info("{}: draining", strsignal(sig));
      beginDrain(true);
    }
  }
  armRead(ControlOp::kSignal, signal_fd_, {reinterpret_cast<char*>(&siginfo_), sizeof(siginfo_)});
}

void Control::onInotify(const Completion& c) {
  if (c.res > 0) {
    size_t off = 0;
    while (off + sizeof(inotify_event) <= static_cast<size_t>(c.res)) {
      const auto* ev = reinterpret_cast<const inotify_event*>(inotify_buf_.data() + off);
      std::string_view name = ev->len > 0 ? std::string_view(ev->name) : std::string_view();
      // Any change to the file (or the ..data symlink) starts or restarts the settling, which
      // decides when the file is whole; a lost event (queue overflow) may have been one.
      if ((ev->mask & IN_Q_OVERFLOW) != 0 ||
          (ev->wd == config_watch_.wd && isConfigEvent(name, config_watch_.base))) {
        requestReload(false);
      }
      // The config text may be unchanged, so the load is forced: it reads the labels again.
      if (ev->wd == labels_watch_.wd && isConfigEvent(name, labels_watch_.base)) {
        requestReload(true);
      }
      off += sizeof(inotify_event) + ev->len;
    }
  } else if (c.res < 0) {
    spdlog::warn("inotify read: {}", std::strerror(-c.res));
  }
  armRead(ControlOp::kInotify, inotify_fd_, inotify_buf_);
}

StatsSnapshot Control::snapshot() const {
  std::vector<const WorkerStats*> stats;
  stats.reserve(workers_.size());
  for (const auto& w : workers_) stats.push_back(&w->stats);
  ProcessSample p;
  p.config_generation = generation_;
  p.config_reloads = reloads_;
  p.config_reload_failures = reload_failures_;
  p.config_last_reload_ok = last_reload_ok_;
  if (table_) {
    for (const auto& f : table_->findings()) ++p.config_findings[static_cast<int>(f.severity)];
  }
  p.draining = draining_;
  p.ready = ready();
  p.io_uring_setup_fallbacks = setup_fallbacks_;
  p.relay = relay_in_use_;
  p.relay_fallbacks = relay_fallbacks_;
  for (const auto& w : workers_) p.io_uring_setup_fallbacks += w->ring_fallback.load() ? 1 : 0;
  p.workers = static_cast<unsigned>(workers_.size());
  return aggregate(stats, p);
}

nlohmann::json Control::configDump() const {
  nlohmann::json j;
  j["generation"] = generation_;
  j["config_path"] = options_.config_path;
  j["last_reload"] = {{"ok", last_reload_ok_},
                      {"error", last_error_},
                      {"reloads", reloads_},
                      {"failures", reload_failures_}};
  j["settings"] = {
      {"outbound_listen", settings_.outbound_listen.toString()},
      {"inbound_listen", settings_.inbound_listen.toString()},
      {"admin_listen", settings_.admin_listen.toString()},
      {"inbound_source", settings_.inbound_source.toString()},
      {"inbound_interception_mode", settings_.inbound_transparent ? "TPROXY" : "REDIRECT"},
      {"outbound_traffic_policy", policyName(settings_.outbound_policy)},
      {"connect_timeout_ms", settings_.connect_timeout.count()},
      {"drain_timeout_ms", settings_.drain_timeout.count()},
      {"max_connect_attempts", settings_.max_connect_attempts},
      {"access_log", settings_.access_log},
      {"path_normalization", security::toString(settings_.path_normalization)},
      {"concurrency", options_.concurrency}};
  // Who the proxy is, as sourceLabels, sourceNamespace and workloadSelector see it.
  j["workload"] = routing::toJson(table_ ? settings_.workload : options_.overrides.workload);
  j["relay"] = {{"mode", settings_.relay},
                {"in_use", relay_in_use_},
                {"pin_dir", options_.relay_pin_dir},
                {"kernel_unavailable", relay_error_}};
  // Where the kernel relay is in use: when a pair goes to it, and (auto) how many did or not.
  if (relay_in_use_ == "kernel") {
    auto mode = parseRelayMode(settings_.relay);
    if (mode && *mode == RelayMode::kAuto) {
      const WorkerTotals w = snapshot().workers;
      j["relay"]["handover"] = {
          {"when", fmt::format("after {} exchanges with no receive filling a buffer",
                               HandoverRule::kExchanges)},
          {"exchanges", HandoverRule::kExchanges},
          {"max_tries", HandoverRule::kMaxTries},
          {"handed_over", w.relay_handovers},
          {"races", w.relay_handover_races},
          {"kept_short", w.relay_kept_short},
          {"kept_bulk", w.relay_kept_bulk},
          {"kept_raced", w.relay_kept_raced}};
    } else {
      j["relay"]["handover"] = {{"when", "at connect"}};
    }
  }
  j["draining"] = draining_;
  j["route_table"] = table_ ? table_->toJson() : nlohmann::json();
  return j;
}

Result<std::shared_ptr<const RelayMaps>> Control::resolveRelay() {
  auto parsed = parseRelayMode(settings_.relay);
  const RelayMode mode = parsed ? *parsed : RelayMode::kUring;
  const std::string before = relay_in_use_;
  std::shared_ptr<const RelayMaps> maps;
  if (mode != RelayMode::kUring && !relay_maps_) {
    // eBPF mode's fast path and the kernel relay exclude each other (docs/EBPF.md).
    auto fast_path = ebpfFastPathOn(options_.bpf_pin_dir);
    if (!fast_path) {
      spdlog::warn("relay: cannot tell whether the eBPF fast path is on here: {}",
                   fast_path.error().message);
    } else if (*fast_path) {
      fast_path_excludes_relay_ = true;
      relay_error_ = kFastPathExcludesKernelRelay;
    }
  }
  if (mode != RelayMode::kUring && !relay_maps_ && !fast_path_excludes_relay_) {
    auto opened = RelayMaps::open(options_.relay_pin_dir, std::max(1U, options_.concurrency));
    if (opened) {
      relay_maps_ = std::move(*opened);
      relay_error_.clear();
    } else {
      relay_error_ = opened.error().message;
      relay_not_installed_ = opened.error().code == ENOENT;
    }
  }
  if (mode != RelayMode::kUring && relay_maps_) maps = relay_maps_;
  relay_in_use_ = maps ? "kernel" : "uring";
  if (mode == RelayMode::kKernel && !maps) {
    if (!workers_started_) {
      return makeError(
          fmt::format("--relay kernel: the kernel relay is unavailable: {}", relay_error_));
    }
    spdlog::error(
        "relay kernel asked for but unavailable ({}); new connections keep the io_uring "
        "relay",
        relay_error_);
  }
  if (relay_in_use_ == before) return maps;
  if (maps) {
    spdlog::info("relay: kernel (sockmap, pins in {}) for pure L4 routes", options_.relay_pin_dir);
  } else if (mode == RelayMode::kAuto) {
    ++relay_fallbacks_;
    // Not installed is the usual case (installing the relay is the opt-in), not a fault.
    if (relay_not_installed_ && !fast_path_excludes_relay_) {
      spdlog::info("relay: io_uring (no kernel relay installed: {})", relay_error_);
    } else {
      spdlog::warn("relay: io_uring; the kernel relay is unavailable: {}", relay_error_);
    }
  } else {
    spdlog::info("relay: io_uring ({})", mode == RelayMode::kUring ? "--relay uring" : "fallback");
  }
  return maps;
}

std::string Control::clusters() const {
  StatsSnapshot s = snapshot();
  std::string out;
  for (const auto& [key, t] : s.endpoints) {
    const std::string prefix =
        fmt::format("{}|{}|{}", key.service, key.subset, key.endpoint.empty() ? "-" : key.endpoint);
    fmt::format_to(std::back_inserter(out),
                   "{0}::cx_total::{1}\n{0}::cx_active::{2}\n{0}::cx_connect_fail::{3}\n"
                   "{0}::rx_bytes::{4}\n{0}::tx_bytes::{5}\n{0}::rq_total::{6}\n"
                   "{0}::outlier_ejections::{7}\n{0}::health_flags::{8}\n",
                   prefix, t.opened, t.opened - std::min(t.opened, t.closed), t.connect_failures,
                   t.received_bytes, t.sent_bytes, t.requests, t.ejections,
                   t.ejected > 0 ? "/failed_outlier_check" : "healthy");
  }
  return out;
}

}  // namespace

int runProxy(const ProxyOptions& options, TableLoader loader, RouterFactory routers) {
  // Each connection holds two descriptors; the soft default (often 1024) would cap a busy
  // sidecar at 500 connections while the hard limit allows far more.
  spdlog::info("open files limit: {}", raiseFileLimit());
  Control control(options, std::move(loader), std::move(routers));
  return control.run();
}

}  // namespace remora::proxy
