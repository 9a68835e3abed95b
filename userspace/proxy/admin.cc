#include "proxy/admin.h"

#include <fmt/format.h>
#include <http_parser.h>

namespace remora::proxy {
namespace {

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
    case 503:
      return "Service Unavailable";
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
  total_ += bytes.size();
  if (total_ > kMaxRequestBytes) {
    error_status_ = 413;
    error_ = fmt::format("request larger than {} bytes", kMaxRequestBytes);
    return Status::kError;
  }
  size_t n = http_parser_execute(&impl_->parser, &impl_->settings, bytes.data(), bytes.size());
  auto err = HTTP_PARSER_ERRNO(&impl_->parser);
  if (complete_ && error_.empty()) return Status::kComplete;
  if (err != HPE_OK || n != bytes.size() || !error_.empty()) {
    if (error_.empty()) error_ = fmt::format("malformed request: {}", http_errno_description(err));
    return Status::kError;
  }
  return Status::kIncomplete;
}

HttpRequestParser::Status HttpRequestParser::finish() {
  if (complete_ && error_.empty()) return Status::kComplete;
  if (error_.empty()) error_ = "connection closed before the request was complete";
  return Status::kError;
}

HttpResponse badRequest(int status, const std::string& why) { return text(status, why + "\n"); }

HttpResponse handleAdminRequest(const HttpRequest& request, const AdminHooks& hooks) {
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
      HttpResponse r = text(200, hooks.config_dump().dump(2) + "\n");
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

}  // namespace remora::proxy
