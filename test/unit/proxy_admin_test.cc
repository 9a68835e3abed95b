// The admin endpoint's HTTP parsing and routing, without sockets.
#include <gtest/gtest.h>

#include "proxy/admin.h"

namespace remora::proxy {
namespace {

struct Fixture {
  bool ready = true;
  int drains = 0;
  int quits = 0;
  AdminHooks hooks() {
    AdminHooks h;
    h.ready = [this] { return ready; };
    h.prometheus = [] { return std::string("remora_workers 1\n"); };
    h.config_dump = [] { return nlohmann::json{{"generation", 3}}; };
    h.clusters = [] { return std::string("svc|v1|1.2.3.4:80::cx_total::1\n"); };
    h.drain = [this] { ++drains; };
    h.quit = [this] { ++quits; };
    return h;
  }
};

HttpRequest parse(const std::string& raw) {
  HttpRequestParser p;
  EXPECT_EQ(p.feed(raw), HttpRequestParser::Status::kComplete) << p.error();
  return p.request();
}

TEST(HttpRequestParserTest, ParsesInPiecesWithQueryAndBody) {
  HttpRequestParser p;
  EXPECT_EQ(p.feed("POST /drain?x=1 HTT"), HttpRequestParser::Status::kIncomplete);
  EXPECT_EQ(p.feed("P/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"),
            HttpRequestParser::Status::kIncomplete);
  EXPECT_EQ(p.feed("ok"), HttpRequestParser::Status::kComplete);
  EXPECT_EQ(p.request().method, "POST");
  EXPECT_EQ(p.request().path, "/drain");
  EXPECT_EQ(p.request().query, "x=1");
  EXPECT_EQ(p.request().body, "ok");
}

TEST(HttpRequestParserTest, RejectsGarbageTruncationAndHugeRequests) {
  HttpRequestParser garbage;
  EXPECT_EQ(garbage.feed("HELLO\r\n\r\n"), HttpRequestParser::Status::kError);
  EXPECT_EQ(garbage.errorStatus(), 400);
  HttpRequestParser truncated;
  EXPECT_EQ(truncated.feed("GET /ready HTTP/1.1\r\n"), HttpRequestParser::Status::kIncomplete);
  EXPECT_EQ(truncated.finish(), HttpRequestParser::Status::kError);
  HttpRequestParser huge;
  EXPECT_EQ(huge.feed("GET /" + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n"),
            HttpRequestParser::Status::kError);
  EXPECT_EQ(huge.errorStatus(), 413);
  EXPECT_NE(badRequest(413, huge.error()).serialize().find("HTTP/1.1 413"), std::string::npos);
}

TEST(AdminHandlerTest, ReadyIs200ThenNotReadyWhileDraining) {
  Fixture f;
  auto h = f.hooks();
  EXPECT_EQ(handleAdminRequest(parse("GET /ready HTTP/1.1\r\n\r\n"), h).status, 200);
  f.ready = false;
  auto r = handleAdminRequest(parse("GET /ready HTTP/1.1\r\n\r\n"), h);
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.serialize().find("HTTP/1.1 503 Service Unavailable\r\n"), std::string::npos);
}

TEST(AdminHandlerTest, ServesStatsConfigDumpAndClusters) {
  Fixture f;
  auto h = f.hooks();
  auto stats = handleAdminRequest(parse("GET /stats/prometheus HTTP/1.1\r\n\r\n"), h);
  EXPECT_EQ(stats.status, 200);
  EXPECT_NE(stats.content_type.find("version=0.0.4"), std::string::npos);
  EXPECT_EQ(handleAdminRequest(parse("GET /stats?format=prometheus HTTP/1.1\r\n\r\n"), h).body,
            stats.body);
  auto dump = handleAdminRequest(parse("GET /config_dump HTTP/1.1\r\n\r\n"), h);
  EXPECT_EQ(dump.content_type, "application/json");
  EXPECT_EQ(nlohmann::json::parse(dump.body)["generation"], 3);
  EXPECT_NE(handleAdminRequest(parse("GET /clusters HTTP/1.0\r\n\r\n"), h).body.find("cx_total"),
            std::string::npos);
  auto serialized = dump.serialize();
  EXPECT_NE(serialized.find("Content-Length: " + std::to_string(dump.body.size())),
            std::string::npos);
}

TEST(AdminHandlerTest, DrainNeedsPostAndUnknownPathsAre404) {
  Fixture f;
  auto h = f.hooks();
  EXPECT_EQ(handleAdminRequest(parse("GET /drain HTTP/1.1\r\n\r\n"), h).status, 405);
  EXPECT_EQ(f.drains, 0);
  EXPECT_EQ(handleAdminRequest(parse("POST /drain HTTP/1.1\r\n\r\n"), h).status, 200);
  EXPECT_EQ(f.drains, 1);
  EXPECT_EQ(handleAdminRequest(parse("POST /quitquitquit HTTP/1.1\r\n\r\n"), h).status, 200);
  EXPECT_EQ(f.quits, 1);
  EXPECT_EQ(handleAdminRequest(parse("POST /ready HTTP/1.1\r\n\r\n"), h).status, 405);
  EXPECT_EQ(handleAdminRequest(parse("GET /nope HTTP/1.1\r\n\r\n"), h).status, 404);
}

// Reproduced: the parser took HTTP/9.9 and bare-LF lines.
TEST(HttpRequestParserTest, AcceptsOnlyHttp10And11) {
  for (const char* version : {"HTTP/1.0", "HTTP/1.1"}) {
    HttpRequestParser p;
    EXPECT_EQ(p.feed(std::string("GET /ready ") + version + "\r\n\r\n"),
              HttpRequestParser::Status::kComplete)
        << version;
  }
  for (const char* version : {"HTTP/9.9", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9"}) {
    HttpRequestParser p;
    EXPECT_EQ(p.feed(std::string("GET /ready ") + version + "\r\nHost: a\r\n\r\n"),
              HttpRequestParser::Status::kError)
        << version;
    EXPECT_EQ(p.errorStatus(), 505) << version << ": " << p.error();
  }
}

TEST(HttpRequestParserTest, RefusesBareLineFeedsInTheHeadButNotInTheBody) {
  HttpRequestParser request_line;
  EXPECT_EQ(request_line.feed("GET /ready HTTP/1.1\n\n"), HttpRequestParser::Status::kError);
  EXPECT_EQ(request_line.errorStatus(), 400);
  EXPECT_NE(request_line.error().find("bare LF"), std::string::npos) << request_line.error();
  HttpRequestParser header;
  EXPECT_EQ(header.feed("GET /ready HTTP/1.1\r\nHost: a\n"), HttpRequestParser::Status::kError);
  // Split between the CR and the LF: still a CRLF.
  HttpRequestParser split;
  EXPECT_EQ(split.feed("GET /ready HTTP/1.1\r"), HttpRequestParser::Status::kIncomplete);
  EXPECT_EQ(split.feed("\nHost: a\r\n\r"), HttpRequestParser::Status::kIncomplete);
  EXPECT_EQ(split.feed("\n"), HttpRequestParser::Status::kComplete);
  HttpRequestParser body;
  EXPECT_EQ(body.feed("POST /drain HTTP/1.1\r\nContent-Length: 4\r\n\r\na\nb\n"),
            HttpRequestParser::Status::kComplete);
  EXPECT_EQ(body.request().body, "a\nb\n");
}

// Reproduced: a POST announcing a huge body held its connection open while waiting for it.
TEST(HttpRequestParserTest, RefusesAHugeContentLengthBeforeReadingTheBody) {
  HttpRequestParser p;
  EXPECT_EQ(p.feed("POST /drain HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n"),
            HttpRequestParser::Status::kError);
  EXPECT_EQ(p.errorStatus(), 413);
  HttpRequestParser at_limit;
  EXPECT_EQ(at_limit.feed("POST /drain HTTP/1.1\r\nContent-Length: 4096\r\n\r\n"),
            HttpRequestParser::Status::kIncomplete);
  EXPECT_EQ(at_limit.feed(std::string(4096, 'x')), HttpRequestParser::Status::kComplete);
}

// Reproduced: GET /config_dump aborted the proxy on a byte that is not UTF-8.
TEST(AdminHandlerTest, ConfigDumpReplacesInvalidUtf8) {
  Fixture f;
  auto h = f.hooks();
  h.config_dump = [] {
    return nlohmann::json{{"last_reload", {{"error", "kind Serv\xff\xfeice unknown"}}},
                          {"ports", {"http-\xc3"}}};
  };
  HttpResponse r = handleAdminRequest(parse("GET /config_dump HTTP/1.1\r\n\r\n"), h);
  EXPECT_EQ(r.status, 200);
  auto back = nlohmann::json::parse(r.body);  // valid UTF-8 JSON now
  EXPECT_EQ(back["last_reload"]["error"], "kind Serv\xef\xbf\xbd\xef\xbf\xbdice unknown");
  EXPECT_EQ(dumpJson(nlohmann::json("a\xff")), "\"a\xef\xbf\xbd\"");
}

TEST(AdminHandlerTest, AHookThatThrowsIsA500) {
  Fixture f;
  auto h = f.hooks();
  h.clusters = []() -> std::string { throw std::runtime_error("boom"); };
  HttpResponse r = handleAdminRequest(parse("GET /clusters HTTP/1.1\r\n\r\n"), h);
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.serialize().find("500 Internal Server Error"), std::string::npos);
}

}  // namespace
}  // namespace remora::proxy
