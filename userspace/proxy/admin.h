#pragma once

// The admin endpoint (127.0.0.1:15000): an incremental HTTP/1.x request parser (http_parser)
// with the limits an endpoint reachable by anything in the pod needs, a handler that maps
// requests to responses (both testable without sockets), and AdminServer, which owns the
// listener and the connections on a ring it shares with the control thread.

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "loop/ring.h"
#include "loop/slot_table.h"

namespace remora::proxy {

// JSON text for any value: bytes that are not UTF-8 (from a config file, say) become U+FFFD
// instead of throwing nlohmann's type_error.316. Every JSON the proxy serves goes through it.
std::string dumpJson(const nlohmann::json& value, int indent = -1);

struct HttpRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // after '?', may be empty
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // HTTP/1.1 with Content-Length and Connection: close.
  std::string serialize() const;
};

// Feeds request bytes as they arrive. One request per connection, HTTP/1.0 or HTTP/1.1 only,
// lines ending in CRLF (a bare LF in the head is refused: proxies in between may split the
// message differently), a body of at most kMaxBodyBytes announced up front (a larger
// Content-Length is refused at once, not read).
class HttpRequestParser {
 public:
  enum class Status { kIncomplete, kComplete, kError };
  static constexpr size_t kMaxRequestBytes = 16384;
  static constexpr uint64_t kMaxBodyBytes = 4096;

  HttpRequestParser();
  ~HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  Status feed(std::string_view bytes);
  // The peer closed its side: a request without a complete message is an error.
  Status finish();
  const HttpRequest& request() const { return request_; }
  // The status code to answer a kError with (400, 413, 505) and why.
  int errorStatus() const { return error_status_; }
  const std::string& error() const { return error_; }

 private:
  // Checks the head's line endings; false (with error_ set) on a bare LF.
  bool checkLineEndings(std::string_view bytes);
  // Sets the 413 error of a request past kMaxRequestBytes.
  Status tooLarge();

  struct Impl;
  std::unique_ptr<Impl> impl_;
  HttpRequest request_;
  std::string url_;
  size_t total_ = 0;  // bytes parsed, at most kMaxRequestBytes
  bool complete_ = false;
  bool head_done_ = false;
  bool line_started_ = false;  // the current head line has bytes besides its CR
  bool seen_line_ = false;     // a non-empty head line went by (the request line)
  char previous_ = 0;
  int error_status_ = 400;
  std::string error_;
};

// What the admin endpoint reads from and acts on. Every hook runs on the admin (control) thread.
struct AdminHooks {
  std::function<bool()> ready;
  std::function<std::string()> prometheus;
  std::function<nlohmann::json()> config_dump;
  std::function<std::string()> clusters;
  std::function<void()> drain;  // stop accepting, /ready false; the process stays up
  std::function<void()> quit;   // drain, then exit (like SIGTERM)
};

// Never throws: a hook that does becomes a 500.
HttpResponse handleAdminRequest(const HttpRequest& request, const AdminHooks& hooks);
// The response for a request the parser rejected.
HttpResponse badRequest(int status, const std::string& why);

struct AdminLimits {
  // Connections served at once. At the cap, accept pauses and new connections wait in the
  // listen backlog (open the listener with a backlog of max_connections); those a multishot
  // accept took in one burst before the pause wait, unread, for a free slot (up to as many
  // again; past that they are closed). At most 2 x max_connections descriptors in all.
  uint32_t max_connections = 64;
  // From accept to the whole request; then again from the request to the last byte sent.
  std::chrono::milliseconds read_timeout{5000};
  std::chrono::milliseconds write_timeout{10000};
  // After a failed accept (EMFILE, ENFILE, ENOMEM...), the wait before the next one; doubles
  // up to the maximum while accept keeps failing, back to the minimum after a success.
  std::chrono::milliseconds accept_backoff_min{10};
  std::chrono::milliseconds accept_backoff_max{1000};
};

struct AdminCounters {
  uint64_t accepted = 0;
  uint64_t accept_errors = 0;
  uint64_t accept_pauses = 0;  // times the connection cap paused accept
  uint64_t rejected = 0;       // accepted past the cap and past the waiting room, closed
  uint64_t timeouts = 0;       // closed by the read or write timeout
  uint64_t bad_requests = 0;   // answered 4xx/5xx by the parser
};

// The admin endpoint's sockets, on a ring the caller drives (the control thread's). Each
// connection lives in a SlotTable entry: its read buffer never moves while a read is pending.
// Single-threaded: every call, and every hook, runs on the ring's thread.
class AdminServer {
 public:
  // The op byte of every user_data this server puts on the ring has this bit; the owner of the
  // ring keeps its own ops below it and hands completions with the bit to onCompletion().
  static constexpr uint8_t kOpBit = 0x80;
  static bool owns(uint64_t user_data) {
    return (loop::UserData::decode(user_data).op & kOpBit) != 0;
  }

  AdminServer(loop::Ring& ring, AdminHooks hooks, AdminLimits limits = {});
  // Closes the listener and the connections' sockets. Destroy the ring first (or make sure it
  // has no operation pending on them): the read buffers go with this object.
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Takes ownership of a listening socket and starts accepting.
  void start(int listen_fd);
  void onCompletion(const loop::Completion& completion);

  const AdminCounters& counters() const { return counters_; }
  size_t activeConnections() const { return conns_.inUse(); }
  // The counters above in the Prometheus text format (remora_admin_*).
  std::string renderPrometheus() const;

 private:
  enum class Op : uint8_t {
    kAccept = kOpBit | 1,
    kAcceptRetry,  // backoff timer after a failed accept
    kAcceptCancel,
    kSweep,  // periodic check of the connections' deadlines
    kRead,
    kSend,
    kClose,
  };
  struct Conn {
    int fd = -1;
    std::unique_ptr<HttpRequestParser> parser;
    std::chrono::steady_clock::time_point deadline;
    std::array<char, 4096> buf{};  // the kernel writes here while a read is pending
    std::string out;               // and reads here while a send is pending
    size_t sent = 0;
  };
  using Clock = std::chrono::steady_clock;

  static uint64_t tagOf(Op op) { return loop::UserData{static_cast<uint8_t>(op), 0, 0}.encode(); }
  void maybeArmAccept();
  void onAccept(const loop::Completion& c);
  void open(int fd);
  // A slot came free: the next waiting connection takes it, or accept resumes.
  void onSlotFreed();
  void onRead(uint32_t slot, const loop::Completion& c);
  void onSend(uint32_t slot, const loop::Completion& c);
  void armRead(uint32_t slot);
  void respond(uint32_t slot, const HttpResponse& response);
  void close(uint32_t slot);
  void maybeArmSweep();
  void sweep();

  loop::Ring& ring_;
  AdminHooks hooks_;
  AdminLimits limits_;
  int listen_fd_ = -1;
  bool accept_armed_ = false;       // a multishot accept is in the kernel
  bool accept_cancelling_ = false;  // and a cancel of it is on its way (cap reached)
  bool backoff_armed_ = false;
  std::chrono::milliseconds backoff_;
  bool sweep_armed_ = false;
  loop::SlotTable<Conn> conns_;
  std::deque<int> waiting_;  // accepted past the cap, waiting for a slot
  AdminCounters counters_;
};

}  // namespace remora::proxy
