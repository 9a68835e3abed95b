#pragma once

// The admin endpoint's HTTP handling, apart from its sockets so it can be unit-tested: an
// incremental request parser (http_parser) and a handler that maps requests to responses.

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace remora::proxy {

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

// Feeds request bytes as they arrive. One request per connection.
class HttpRequestParser {
 public:
  enum class Status { kIncomplete, kComplete, kError };
  static constexpr size_t kMaxRequestBytes = 16384;

  HttpRequestParser();
  ~HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  Status feed(std::string_view bytes);
  // The peer closed its side: a request without a complete message is an error.
  Status finish();
  const HttpRequest& request() const { return request_; }
  // The status code to answer a kError with (400, 413) and why.
  int errorStatus() const { return error_status_; }
  const std::string& error() const { return error_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  HttpRequest request_;
  std::string url_;
  size_t total_ = 0;
  bool complete_ = false;
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

HttpResponse handleAdminRequest(const HttpRequest& request, const AdminHooks& hooks);
// The response for a request the parser rejected.
HttpResponse badRequest(int status, const std::string& why);

}  // namespace remora::proxy
