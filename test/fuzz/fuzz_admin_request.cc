// libFuzzer target: the admin endpoint's HTTP request parser (remora::proxy::HttpRequestParser)
// and handler. The bytes are fed twice, whole and in pieces, as a socket may deliver them; both
// must end the same way. A complete request is then answered, a rejected one gets its error
// response.
//
// Input: the bytes a client sends on one admin connection. The first byte sets the piece size
// of the second feed (1-64 bytes).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/admin.h"

namespace rp = remora::proxy;

namespace {

using Status = rp::HttpRequestParser::Status;

Status feedAll(rp::HttpRequestParser& parser, std::string_view bytes, size_t piece) {
  Status status = Status::kIncomplete;
  for (size_t at = 0; at < bytes.size() && status == Status::kIncomplete; at += piece) {
    status = parser.feed(bytes.substr(at, std::min(piece, bytes.size() - at)));
  }
  if (status == Status::kIncomplete) status = parser.finish();
  return status;
}

rp::AdminHooks hooks() {
  rp::AdminHooks h;
  h.ready = [] { return true; };
  h.prometheus = [] { return std::string("remora_workers 1\n"); };
  h.config_dump = [] { return nlohmann::json{{"generation", 1}}; };
  h.clusters = [] { return std::string("svc|v1|10.0.0.1:80::cx_total::1\n"); };
  h.drain = [] {};
  h.quit = [] {};
  return h;
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t piece = 1 + data[0] % 64;
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  rp::HttpRequestParser whole;
  Status whole_status = feedAll(whole, bytes, std::max<size_t>(bytes.size(), 1));
  rp::HttpRequestParser pieces;
  Status pieces_status = feedAll(pieces, bytes, piece);
  if (whole_status != pieces_status) std::abort();

  static const rp::AdminHooks kHooks = hooks();
  if (whole_status == Status::kComplete) {
    const rp::HttpRequest& a = whole.request();
    const rp::HttpRequest& b = pieces.request();
    if (a.method != b.method || a.path != b.path || a.query != b.query || a.body != b.body) {
      std::abort();
    }
    (void)rp::handleAdminRequest(a, kHooks).serialize();
  } else {
    (void)rp::badRequest(whole.errorStatus(), whole.error()).serialize();
  }
  return 0;
}
