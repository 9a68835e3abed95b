#include "proxy/admin.h"

#include <fmt/format.h>
#include <http_parser.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace remora::proxy {
namespace {

using loop::Completion;
using loop::UserData;

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

HttpResponse text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

}  // namespace

std::string dumpJson(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string HttpResponse::serialize() const {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      status, reason(status), content_type, body.size(), body);
}

struct HttpRequestParser::Impl {
  http_parser parser{};
  http_parser_settings settings{};
};

HttpRequestParser::HttpRequestParser() : impl_(std::make_unique<Impl>()) {
  http_parser_init(&impl_->parser, HTTP_REQUEST);
  impl_->parser.data = this;
  auto& s = impl_->settings;
  http_parser_settings_init(&s);
  s.on_url = [](http_parser* p, const char* at, size_t len) {
    static_cast<HttpRequestParser*>(p->data)->url_.append(at, len);
    return 0;
  };
  s.on_headers_complete = [](http_parser* p) {
    auto* self = static_cast<HttpRequestParser*>(p->data);
    if (p->http_major != 1 || p->http_minor > 1) {
      self->error_status_ = 505;
      self->error_ = fmt::format("HTTP/{}.{} is not supported: HTTP/1.0 and HTTP/1.1 only",
                                 p->http_major, p->http_minor);
      return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > kMaxBodyBytes) {
      self->error_status_ = 413;
      self->error_ = fmt::format("a body of {} bytes; the admin endpoint takes at most {}",
                                 p->content_length, kMaxBodyBytes);
      return -1;
    }
    return 0;
  };
  s.on_body = [](http_parser* p, const char* at, size_t len) {
    static_cast<HttpRequestParser*>(p->data)->request_.body.append(at, len);
    return 0;
  };
  s.on_message_complete = [](http_parser* p) {
    auto* self = static_cast<HttpRequestParser*>(p->data);
    self->complete_ = true;
    self->request_.method = http_method_str(static_cast<http_method>(p->method));
    http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(self->url_.data(), self->url_.size(), 0, &u) != 0) {
      self->error_ = "malformed request target";
      return -1;
    }
    if ((u.field_set & (1 << UF_PATH)) != 0) {
      self->request_.path = self->url_.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    }
    if ((u.field_set & (1 << UF_QUERY)) != 0) {
      self->request_.query =
          self->url_.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    }
    http_parser_pause(p, 1);  // one request per connection
    return 0;
  };
}

HttpRequestParser::~HttpRequestParser() = default;

HttpRequestParser::Status HttpRequestParser::feed(std::string_view bytes) {
  if (complete_ && error_.empty()) return Status::kComplete;
  if (!error_.empty()) return Status::kError;
  // Only the first kMaxRequestBytes of a connection are parsed. A request that ends within them
  // is answered whatever follows it in the same read (one request per connection), so the
  // answer does not depend on how TCP split the bytes.
  const size_t room = kMaxRequestBytes - total_;
  const bool over = bytes.size() > room;
  if (room == 0) return tooLarge();
  bytes = bytes.substr(0, room);
  total_ += bytes.size();
  if (!checkLineEndings(bytes)) return Status::kError;
  size_t n = http_parser_execute(&impl_->parser, &impl_->settings, bytes.data(), bytes.size());
  auto err = HTTP_PARSER_ERRNO(&impl_->parser);
  if (complete_ && error_.empty()) return Status::kComplete;
  if (err != HPE_OK || n != bytes.size() || !error_.empty()) {
    if (error_.empty()) error_ = fmt::format("malformed request: {}", http_errno_description(err));
    return Status::kError;
  }
  return over ? tooLarge() : Status::kIncomplete;
}

HttpRequestParser::Status HttpRequestParser::tooLarge() {
  error_status_ = 413;
  error_ = fmt::format("request larger than {} bytes", kMaxRequestBytes);
  return Status::kError;
}

bool HttpRequestParser::checkLineEndings(std::string_view bytes) {
  for (char c : bytes) {
    if (head_done_) return true;
    // A CR not followed by LF, whichever read it arrives in: http_parser would take "\r" plus
    // any byte as a line end, so the answer would depend on how TCP split the bytes.
    if (previous_ == '\r' && c != '\n') {
      error_ = "the request has a bare CR; HTTP lines end in CRLF";
      return false;
    }
    if (c == '\n') {
      if (previous_ != '\r') {
        error_ = "a line of the request ends in a bare LF; HTTP lines end in CRLF";
        return false;
      }
      // The empty line after the request line and headers ends the head; the body may hold
      // anything.
      if (!line_started_ && seen_line_) head_done_ = true;
      seen_line_ = seen_line_ || line_started_;
      line_started_ = false;
    } else if (c != '\r') {
      line_started_ = true;
    }
    previous_ = c;
  }
  return true;
}

HttpRequestParser::Status HttpRequestParser::finish() {
  if (complete_ && error_.empty()) return Status::kComplete;
  if (error_.empty()) error_ = "connection closed before the request was complete";
  return Status::kError;
}

HttpResponse badRequest(int status, const std::string& why) { return text(status, why + "\n"); }

namespace {

HttpResponse route(const HttpRequest& request, const AdminHooks& hooks) {
  const std::string& path = request.path;
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  auto only = [&](bool allowed, auto&& fn) -> HttpResponse {
    if (!allowed) return text(405, fmt::format("{} does not accept {}\n", path, request.method));
    return fn();
  };
  if (path == "/ready") {
    return only(get,
                [&] { return hooks.ready() ? text(200, "LIVE\n") : text(503, "NOT READY\n"); });
  }
  if (path == "/stats/prometheus" || (path == "/stats" && request.query == "format=prometheus")) {
    return only(get, [&] {
      HttpResponse r = text(200, hooks.prometheus());
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return r;
    });
  }
  if (path == "/config_dump") {
    return only(get, [&] {
      HttpResponse r = text(200, dumpJson(hooks.config_dump(), 2) + "\n");
      r.content_type = "application/json";
      return r;
    });
  }
  if (path == "/clusters") {
    return only(get, [&] { return text(200, hooks.clusters()); });
  }
  if (path == "/drain" || path == "/drain_listeners") {
    return only(post, [&] {
      hooks.drain();
      return text(200, "draining\n");
    });
  }
  if (path == "/quitquitquit") {
    return only(post, [&] {
      hooks.quit();
      return text(200, "OK\n");
    });
  }
  if (path == "/" || path == "/help") {
    return only(get, [&] {
      return text(200,
                  "remora-proxy admin\n"
                  "  GET  /ready             200 when serving, 503 before the first config or "
                  "while draining\n"
                  "  GET  /stats/prometheus  metrics in the Prometheus text format\n"
                  "  GET  /config_dump       the routing table in force, as JSON\n"
                  "  GET  /clusters          per-endpoint counters\n"
                  "  POST /drain             stop accepting, keep open connections\n"
                  "  POST /quitquitquit      drain, then exit\n");
    });
  }
  return text(404, fmt::format("no admin endpoint {}\n", path));
}

}  // namespace

HttpResponse handleAdminRequest(const HttpRequest& request, const AdminHooks& hooks) {
  try {
    return route(request, hooks);
  } catch (const std::exception& e) {
    spdlog::error("admin {} {}: {}", request.method, request.path, e.what());
    return text(500, "internal error\n");
  }
}

AdminServer::AdminServer(loop::Ring& ring, AdminHooks hooks, AdminLimits limits)
    : ring_(ring),
      hooks_(std::move(hooks)),
      limits_(limits),
      backoff_(limits.accept_backoff_min),
      conns_(std::max<uint32_t>(1, limits.max_connections)) {}

AdminServer::~AdminServer() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : waiting_) ::close(fd);
  for (uint32_t slot = 0; slot < conns_.size(); ++slot) {
    if (conns_.inUse(slot) && conns_[slot].fd >= 0) ::close(conns_[slot].fd);
  }
}

void AdminServer::start(int listen_fd) {
  listen_fd_ = listen_fd;
  maybeArmAccept();
}

void AdminServer::maybeArmAccept() {
  if (listen_fd_ < 0 || accept_armed_ || backoff_armed_) return;
  if (!waiting_.empty() || conns_.inUse() >= conns_.capacity()) return;
  ring_.acceptMultishot(listen_fd_, tagOf(Op::kAccept));
  accept_armed_ = true;
}

void AdminServer::onCompletion(const Completion& c) {
  const UserData ud = UserData::decode(c.user_data);
  switch (static_cast<Op>(ud.op)) {
    case Op::kAccept:
      onAccept(c);
      return;
    case Op::kAcceptRetry:
      backoff_armed_ = false;
      maybeArmAccept();
      return;
    case Op::kSweep:
      sweep_armed_ = false;
      sweep();
      maybeArmSweep();
      return;
    case Op::kAcceptCancel:
      return;
    case Op::kRead:
    case Op::kSend:
    case Op::kClose:
      break;
  }
  auto slot = conns_.resolve(ud, !c.more());
  if (!slot) return;  // a completion for an earlier occupant of the slot
  if (!conns_.released(*slot)) {
    if (static_cast<Op>(ud.op) == Op::kRead) onRead(*slot, c);
    if (static_cast<Op>(ud.op) == Op::kSend) onSend(*slot, c);
  }
  if (conns_.settle(*slot)) onSlotFreed();
}

void AdminServer::onSlotFreed() {
  if (!waiting_.empty()) {
    const int fd = waiting_.front();
    waiting_.pop_front();
    open(fd);
    return;
  }
  maybeArmAccept();
}

void AdminServer::onAccept(const Completion& c) {
  if (!c.more()) {
    accept_armed_ = false;
    accept_cancelling_ = false;
  }
  if (c.res >= 0) {
    backoff_ = limits_.accept_backoff_min;
    ++counters_.accepted;
    open(c.res);
  } else if (c.res != -ECANCELED) {
    ++counters_.accept_errors;
    if (!c.more()) {
      // EMFILE and friends: retrying at once would spin this thread while the cause lasts.
      SPDLOG_DEBUG("admin accept: {}; retrying in {} ms", std::strerror(-c.res), backoff_.count());
      ring_.timeout(backoff_, tagOf(Op::kAcceptRetry));
      backoff_armed_ = true;
      backoff_ = std::min(backoff_ * 2, limits_.accept_backoff_max);
    }
  }
  if (accept_armed_ && !accept_cancelling_ && conns_.inUse() >= conns_.capacity()) {
    // At the cap: later connections wait in the listen backlog until a slot frees.
    ring_.cancel(tagOf(Op::kAccept), tagOf(Op::kAcceptCancel));
    accept_cancelling_ = true;
    ++counters_.accept_pauses;
  }
  maybeArmAccept();
}

void AdminServer::open(int fd) {
  auto slot = conns_.acquire();
  if (!slot) {
    // Accepted after the cap was reached, before the cancel of the accept landed (a multishot
    // accept takes a whole burst at once).
    if (waiting_.size() < conns_.capacity()) {
      waiting_.push_back(fd);
    } else {
      ++counters_.rejected;
      ::close(fd);
    }
    return;
  }
  Conn& conn = conns_[*slot];
  conn.fd = fd;
  conn.parser = std::make_unique<HttpRequestParser>();
  conn.deadline = Clock::now() + limits_.read_timeout;
  conn.out.clear();
  conn.sent = 0;
  armRead(*slot);
  maybeArmSweep();
}

void AdminServer::armRead(uint32_t slot) {
  Conn& conn = conns_[slot];
  ring_.read(conn.fd, conn.buf, conns_.track(static_cast<uint8_t>(Op::kRead), slot));
}

void AdminServer::onRead(uint32_t slot, const Completion& c) {
  Conn& conn = conns_[slot];
  if (c.res < 0) {
    close(slot);
    return;
  }
  auto status = c.res == 0 ? conn.parser->finish()
                           : conn.parser->feed(std::string_view(conn.buf.data(), c.res));
  switch (status) {
    case HttpRequestParser::Status::kIncomplete:
      armRead(slot);
      return;
    case HttpRequestParser::Status::kError:
      ++counters_.bad_requests;
      if (c.res == 0) {
        close(slot);  // the peer went away: nobody to answer
      } else {
        respond(slot, badRequest(conn.parser->errorStatus(), conn.parser->error()));
      }
      return;
    case HttpRequestParser::Status::kComplete: {
      HttpResponse response = handleAdminRequest(conn.parser->request(), hooks_);
      if (conn.parser->request().method == "HEAD") response.body.clear();
      respond(slot, response);
      return;
    }
  }
}

void AdminServer::respond(uint32_t slot, const HttpResponse& response) {
  Conn& conn = conns_[slot];
  conn.out = response.serialize();
  conn.sent = 0;
  conn.deadline = Clock::now() + limits_.write_timeout;
  ring_.send(conn.fd, conn.out, conns_.track(static_cast<uint8_t>(Op::kSend), slot));
}

void AdminServer::onSend(uint32_t slot, const Completion& c) {
  Conn& conn = conns_[slot];
  if (c.res <= 0) {
    close(slot);
    return;
  }
  conn.sent += static_cast<size_t>(c.res);
  if (conn.sent < conn.out.size()) {
    ring_.send(conn.fd, std::string_view(conn.out).substr(conn.sent),
               conns_.track(static_cast<uint8_t>(Op::kSend), slot));
  } else {
    close(slot);
  }
}

void AdminServer::close(uint32_t slot) {
  Conn& conn = conns_[slot];
  if (conn.fd >= 0) {
    // cancel (the pending read, if any) -> shutdown -> close: three completions.
    ring_.teardown(conn.fd, conns_.track(static_cast<uint8_t>(Op::kClose), slot, 3));
    conn.fd = -1;
  }
  conn.parser.reset();
  if (conns_.release(slot)) onSlotFreed();
}

void AdminServer::maybeArmSweep() {
  if (sweep_armed_ || conns_.inUse() == 0) return;
  auto period = std::min(limits_.read_timeout, limits_.write_timeout) / 4;
  period = std::clamp(period, std::chrono::milliseconds(20), std::chrono::milliseconds(1000));
  ring_.timeout(period, tagOf(Op::kSweep));
  sweep_armed_ = true;
}

void AdminServer::sweep() {
  const auto now = Clock::now();
  for (uint32_t slot = 0; slot < conns_.size(); ++slot) {
    if (!conns_.inUse(slot) || conns_.released(slot)) continue;
    if (conns_[slot].deadline <= now) {
      ++counters_.timeouts;
      close(slot);
    }
  }
}

std::string AdminServer::renderPrometheus() const {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, uint64_t value) {
    fmt::format_to(std::back_inserter(out), "# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help,
                   type, value);
  };
  metric("remora_admin_connections_active", "gauge", "Admin connections open.", conns_.inUse());
  metric("remora_admin_connections_total", "counter", "Admin connections accepted.",
         counters_.accepted);
  metric("remora_admin_accept_errors_total", "counter",
         "Failed admin accepts (each retried after a backoff).", counters_.accept_errors);
  metric("remora_admin_accept_pauses_total", "counter",
         "Times the admin connection cap paused accepting.", counters_.accept_pauses);
  metric("remora_admin_connections_rejected_total", "counter",
         "Admin connections closed unanswered: the cap and its waiting room were full.",
         counters_.rejected);
  metric("remora_admin_timeouts_total", "counter",
         "Admin connections closed by the read or write timeout.", counters_.timeouts);
  metric("remora_admin_bad_requests_total", "counter",
         "Admin requests refused by the parser (400, 413, 505).", counters_.bad_requests);
  return out;
}

}  // namespace remora::proxy
