#pragma once

// Test doubles for the proxy's unit tests: a Ring that records operations and lets the test
// play the kernel's completions, socket calls answered from tables, and a small RouteTable and
// Router (round-robin over a service's endpoints) standing in for remora_routing.

#include <liburing.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loop/ring.h"
#include "loop/user_data.h"
#include "proxy/socket_ops.h"
#include "proxy/worker.h"
#include "routing/route_table.h"

namespace remora::proxy::testing {

struct RecordedOp {
  enum Kind {
    kAccept,
    kRecv,
    kRecvMultishot,
    kRead,
    kSend,
    kConnect,
    kTimeout,
    kCancel,
    kShutdown,
    kTeardown,
    kShutdownClose,
    kClose
  };
  RecordedOp(Kind k, int f, uint64_t ud) : kind(k), fd(f), user_data(ud) {}
  Kind kind;
  int fd = -1;
  uint64_t user_data = 0;
  std::string data;       // send payload
  SocketAddress address;  // connect target
  uint64_t target = 0;    // cancel target
  int how = 0;            // shutdown
  std::chrono::milliseconds timeout{0};
  std::span<char> into;    // read: where the bytes go
  uint32_t max_bytes = 0;  // recvMultishot: the bound on each completion
  loop::BufferGroup group = loop::BufferGroup::kRelay;
};

class FakeRing final : public loop::Ring {
 public:
  explicit FakeRing(size_t buffers = 32, size_t buffer_size = 64)
      : storage_(buffers, std::string(buffer_size, '\0')) {
    for (uint16_t i = 0; i < buffers; ++i) free_.push_back(i);
  }
  void acceptMultishot(int fd, uint64_t ud) override {
    ops.push_back({RecordedOp::kAccept, fd, ud});
  }
  void recvMultishot(int fd, uint64_t ud, uint32_t max_bytes, loop::BufferGroup group) override {
    RecordedOp op{RecordedOp::kRecvMultishot, fd, ud};
    op.max_bytes = max_bytes;
    op.group = group;
    ops.push_back(op);
  }
  void recv(int fd, uint64_t ud) override { ops.push_back({RecordedOp::kRecv, fd, ud}); }
  void read(int fd, std::span<char> into, uint64_t ud) override {
    RecordedOp op{RecordedOp::kRead, fd, ud};
    op.into = into;
    ops.push_back(op);
  }
  void send(int fd, std::span<const char> data, uint64_t ud) override {
    RecordedOp op{RecordedOp::kSend, fd, ud};
    op.data.assign(data.data(), data.size());
    ops.push_back(op);
  }
  // Recorded like a send of the gathered bytes.
  void sendMessage(int fd, const msghdr* message, uint64_t ud) override {
    RecordedOp op{RecordedOp::kSend, fd, ud};
    for (size_t i = 0; i < message->msg_iovlen; ++i) {
      op.data.append(static_cast<const char*>(message->msg_iov[i].iov_base),
                     message->msg_iov[i].iov_len);
    }
    ++gathered_sends;
    ops.push_back(op);
  }
  void connect(int fd, const sockaddr* a, socklen_t, std::chrono::milliseconds t,
               uint64_t ud) override {
    RecordedOp op{RecordedOp::kConnect, fd, ud};
    op.address = *SocketAddress::fromSockaddr(a);
    op.timeout = t;
    ops.push_back(op);
  }
  void timeout(std::chrono::milliseconds t, uint64_t ud) override {
    RecordedOp op{RecordedOp::kTimeout, -1, ud};
    op.timeout = t;
    ops.push_back(op);
  }
  void cancel(uint64_t target, uint64_t ud) override {
    RecordedOp op{RecordedOp::kCancel, -1, ud};
    op.target = target;
    ops.push_back(op);
  }
  void shutdown(int fd, int how, uint64_t ud) override {
    RecordedOp op{RecordedOp::kShutdown, fd, ud};
    op.how = how;
    ops.push_back(op);
  }
  void teardown(int fd, uint64_t ud) override { ops.push_back({RecordedOp::kTeardown, fd, ud}); }
  void shutdownAndClose(int fd, uint64_t ud) override {
    ops.push_back({RecordedOp::kShutdownClose, fd, ud});
  }
  void close(int fd, uint64_t ud) override { ops.push_back({RecordedOp::kClose, fd, ud}); }
  std::span<char> buffer(uint16_t id) override {
    return {storage_[id].data(), storage_[id].size()};
  }
  void recycleBuffer(uint16_t id) override {
    free_.push_back(id);
    ++recycled;
  }
  size_t buffersAvailable() const override { return free_.size(); }
  Result<int> submitAndDispatch(loop::CompletionHandler&, std::chrono::milliseconds) override {
    return 0;
  }

  // The kernel's side: fills a provided buffer and builds the recv completion.
  loop::Completion recvCompletion(uint64_t ud, const std::string& bytes, bool more = false) {
    uint16_t id = free_.front();
    free_.pop_front();
    storage_[id].replace(0, bytes.size(), bytes);
    uint32_t flags = IORING_CQE_F_BUFFER | (uint32_t{id} << IORING_CQE_BUFFER_SHIFT);
    if (more) flags |= IORING_CQE_F_MORE;
    return {ud, static_cast<int32_t>(bytes.size()), flags};
  }
  void drainBuffers() { free_.clear(); }
  void addBuffer(uint16_t id) { free_.push_back(id); }

  // The last recorded op of a kind on fd (or any fd when -1).
  std::optional<RecordedOp> last(RecordedOp::Kind kind, int fd = -1) const {
    for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
      if (it->kind == kind && (fd == -1 || it->fd == fd)) return *it;
    }
    return std::nullopt;
  }
  size_t count(RecordedOp::Kind kind, int fd = -1) const {
    size_t n = 0;
    for (const auto& op : ops) n += op.kind == kind && (fd == -1 || op.fd == fd);
    return n;
  }

  std::vector<RecordedOp> ops;
  size_t recycled = 0;
  size_t gathered_sends = 0;

 private:
  std::vector<std::string> storage_;
  std::deque<uint16_t> free_;
};

class FakeSockets final : public SocketOps {
 public:
  Result<SocketAddress> originalDestination(int fd, Family) override {
    auto it = original.find(fd);
    if (it == original.end()) return Error{ENOENT, "SO_ORIGINAL_DST: not redirected"};
    return it->second;
  }
  std::optional<SocketAddress> localAddress(int fd) override {
    ++local_calls;
    auto it = local.find(fd);
    if (it == local.end()) return *SocketAddress::parse("10.244.0.5:15001");
    return it->second;
  }
  std::optional<SocketAddress> peerAddress(int) override {
    return *SocketAddress::parse("10.244.0.5:40000");
  }
  Result<int> upstreamSocket(Family, const std::optional<IpAddress>& source) override {
    sources.push_back(source);
    return next_fd++;
  }
  Result<int> transparentUpstreamSocket(const IpAddress& client, uint32_t mark) override {
    transparent.emplace_back(client, mark);
    return next_fd++;
  }
  void setResetOnClose(int fd) override { resets.push_back(fd); }
  void shutdownWrite(int fd) override { shut_writes.push_back(fd); }
  Result<int> upstreamSocketWithoutKeepalive(Family family,
                                             const std::optional<IpAddress>& source) override {
    without_keepalive.push_back(next_fd);
    return upstreamSocket(family, source);
  }
  void keepAlive(int fd) override { kept_alive.push_back(fd); }
  std::vector<int> without_keepalive;                       // sockets made without keepalive
  std::vector<int> kept_alive;                              // keepAlive calls
  std::vector<int> resets;                                  // sockets given SO_LINGER {1,0}
  std::vector<int> shut_writes;                             // shutdown(SHUT_WR), in order
  std::vector<std::pair<IpAddress, uint32_t>> transparent;  // TPROXY: (client, mark)

  std::map<int, SocketAddress> original;
  std::map<int, SocketAddress> local;
  size_t local_calls = 0;  // getsockname calls
  std::vector<std::optional<IpAddress>> sources;
  int next_fd = 300;
};

class FakeTable final : public routing::RouteTable {
 public:
  explicit FakeTable(uint64_t generation = 1) : generation_(generation) {}
  const routing::ServicePort* find(const SocketAddress& dst) const override {
    auto it = services_.find(dst.toString());
    return it == services_.end() ? nullptr : &it->second;
  }
  const routing::ProxySettings& settings() const override { return settings_; }
  uint64_t generation() const override { return generation_; }
  nlohmann::json toJson() const override { return {{"generation", generation_}}; }

  // One subset "v1" with the given endpoints.
  void addService(const std::string& vip, const std::string& name,
                  const std::vector<std::string>& endpoints) {
    routing::ServicePort sp;
    sp.service = name;
    sp.port = SocketAddress::parse(vip)->port;
    routing::Subset subset;
    subset.name = "v1";
    for (const auto& e : endpoints) subset.endpoints.append({*SocketAddress::parse(e), ""});
    sp.subsets.push_back(subset);
    sp.route.push_back({0, 100});
    services_[vip] = sp;
  }
  routing::ProxySettings settings_;

 private:
  uint64_t generation_;
  std::map<std::string, routing::ServicePort> services_;
};

// Round-robin over the first subset; retry takes the next endpoint not yet tried.
class FakeRouter final : public routing::Router {
 public:
  explicit FakeRouter(std::shared_ptr<const routing::RouteTable> t) : table_(std::move(t)) {}
  void setTable(std::shared_ptr<const routing::RouteTable> t) override { table_ = std::move(t); }
  const std::shared_ptr<const routing::RouteTable>& table() const override { return table_; }
  routing::RouteDecision route(const SocketAddress& dst) override {
    routing::RouteDecision d;
    const routing::ServicePort* sp = table_ ? table_->find(dst) : nullptr;
    if (sp == nullptr) {
      d.kind = routing::RouteDecision::Kind::kPassthrough;
      d.upstream = dst;
      return d;
    }
    d.kind = routing::RouteDecision::Kind::kService;
    d.service = sp;
    d.endpoint_index = static_cast<uint32_t>(next_++ % sp->subsets[0].endpoints.size());
    d.upstream = sp->subsets[0].endpoints[d.endpoint_index].address;
    return d;
  }
  std::optional<routing::RouteDecision> retry(const routing::RouteDecision& failed,
                                              std::span<const SocketAddress> tried) override {
    const auto& eps = failed.service->subsets[0].endpoints;
    for (uint32_t i = 0; i < eps.size(); ++i) {
      bool seen = false;
      for (const auto& t : tried) seen = seen || t == eps[i].address;
      if (!seen) {
        routing::RouteDecision d = failed;
        d.endpoint_index = i;
        d.upstream = eps[i].address;
        return d;
      }
    }
    return std::nullopt;
  }
  void release(const routing::RouteDecision&) override { ++released; }
  int released = 0;

 private:
  std::shared_ptr<const routing::RouteTable> table_;
  size_t next_ = 0;
};

}  // namespace remora::proxy::testing
