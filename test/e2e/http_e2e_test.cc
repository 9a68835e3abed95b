// remora-proxy's L7 path (issue 10) in the seed world: the front pod's outbound HTTP to
// bill-service:9999 is parsed and routed per request. Backends are small Python http.server
// processes on the seed pod IPs that answer with their own name; the client is Python's
// http.client holding ONE keep-alive connection, so every split below is per request.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kV1Reply = "this is bill-service-v1";
constexpr const char* kV2Reply = "hello, this is bill-service-v2";
constexpr uint32_t kProxyUid = 1337;
constexpr const char* kPython = "/usr/bin/python3";

// name port [sick]: answers every request with its name (a sick one with a 500); /delay/MS sleeps
// first, /status/N answers N, /flaky/KEY answers 503 the first time KEY is asked, /sha answers
// the SHA-256 and length of the request body (Content-Length or chunked), /bytes/N sends N bytes
// of a fixed pattern, an Upgrade: websocket request gets a 101 and then every byte echoed
// upper-cased.
constexpr const char* kBackend = R"PY(
import sys, time, threading, hashlib
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name, port = sys.argv[1], int(sys.argv[2])
sick = len(sys.argv) > 3 and sys.argv[3] == "sick"
hits, lock = {}, threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, code, body, extra=()):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(b)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b)
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return b"".join(out)
                out.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n) if n else b""
    def do_GET(self):
        data = self.body()
        p = self.path
        if p == "/sha":
            return self.reply(200, "%s %d" % (hashlib.sha256(data).hexdigest(), len(data)))
        if p.startswith("/bytes/"):
            n = int(p.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 256
            while n > 0:
                self.wfile.write(block[:min(n, len(block))])
                n -= min(n, len(block))
            return
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                d = self.connection.recv(4096)
                if not d:
                    break
                self.connection.sendall(d.upper())
            self.close_connection = True
            return
        if sick:
            return self.reply(500, "sick " + name + "\n")
        if p.startswith("/delay/"):
            time.sleep(int(p.split("/")[2]) / 1000.0)
        if p.startswith("/status/"):
            return self.reply(int(p.split("/")[2]), name + "\n")
        if p.startswith("/flaky/"):
            with lock:
                k = hits.get(p, 0)
                hits[p] = k + 1
            if k == 0:
                return self.reply(503, "flaky " + name + "\n")
        self.reply(200, name + "\n", [("x-seen-request-id", self.headers.get("x-request-id", "-")),
                                      ("x-seen-path", p)])
    do_POST = do_GET
    do_HEAD = do_GET
ThreadingHTTPServer.daemon_threads = True
srv = ThreadingHTTPServer(("0.0.0.0", port), H)
print("ready", flush=True)
srv.serve_forever()
)PY";

// port mode [name]: a socket server. Mode "answer" and "silent" play a shadow backend that
// prints one line per request it receives ("shadow PATH host=HOST body=BODY"); "answer"
// answers each with a 200, "silent" never answers; each connection accepted prints "accepted".
// Mode "oneshot" answers the first request of a connection (keep-alive) and closes the
// connection, unanswered, when a second one arrives on it ("closed PATH"), as a server whose
// idle timeout closes a kept-alive connection just as it is reused.
// Mode "early" answers 413 after 64 KiB of a body and closes with the rest unread. Mode "greet" is
// a server-first TCP service (as MySQL is): it greets with "HELLO name" first, then echoes each
// line upper-cased.
constexpr const char* kSocketServer = R"PY(
import sys, socket, threading
port, mode = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(256)
print("ready", flush=True)
def greet(c):
    c.sendall(("HELLO " + sys.argv[3] + "\n").encode())
    for line in c.makefile("rb"):
        c.sendall(line.upper())
def early(c):
    # Reads the head and 64 KiB of the body, answers 413 and closes with the rest unread.
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            return
        buf += d
    body = len(buf.split(b"\r\n\r\n", 1)[1])
    while body < 65536:
        d = c.recv(65536 - body)
        if not d:
            return
        body += len(d)
    reply = b"request body over the limit: %d bytes read\n" % body
    c.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
              % len(reply) + reply)
    c.close()
def serve(c):
    if mode == "greet":
        return greet(c)
    if mode == "early":
        return early(c)
    buf = b""
    answered = False
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        hdr = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(hdr.get("content-length", "0"))
        while len(buf) < n:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        body, buf = buf[:n], buf[n:]
        if mode == "oneshot" and answered:
            print("closed %s" % lines[0].split()[1], flush=True)
            c.close()
            return
        print("shadow %s host=%s body=%s" % (lines[0].split()[1], hdr.get("host", "-"),
                                             body.decode()), flush=True)
        if mode in ("answer", "oneshot"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nshadow\n")
            answered = True
while True:
    c, _ = srv.accept()
    print("accepted", flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
)PY";

// One JSON spec as argv[1]. mode "seq": n requests (or one per entry of "paths") on ONE
// connection, a JSON line each;
// "parallel": n connections at once, one request each; "raw": bytes sent as they are, the
// answer printed until the proxy closes; "upgrade": a websocket-style upgrade, then a message.
constexpr const char* kClient = R"PY(
import sys, json, time, http.client, socket, threading
spec = json.loads(sys.argv[1])
host, port = spec.get("host", "bill-service"), spec.get("port", 9999)
def one(c, hdrs, path=None):
    t = time.monotonic()
    c.request(spec.get("method", "GET"), path or spec.get("path", "/"), body=spec.get("body"),
              headers=hdrs)
    r = c.getresponse()
    body = r.read().decode().strip()
    return {"status": r.status, "body": body, "ms": int((time.monotonic() - t) * 1000),
            "overloaded": r.getheader("x-envoy-overloaded", ""),
            "rid": r.getheader("x-seen-request-id", ""), "path": r.getheader("x-seen-path", "")}
mode = spec.get("mode", "seq")
if mode == "seq":
    c = http.client.HTTPConnection(host, port, timeout=10)
    for p in spec.get("paths") or [None] * spec["n"]:
        print(json.dumps(one(c, spec.get("headers", {}), p)), flush=True)
elif mode == "parallel":
    out, threads = [], []
    def run():
        c = http.client.HTTPConnection(host, port, timeout=10)
        try:
            out.append(one(c, {}))
        except Exception as e:
            out.append({"status": 0, "body": str(e)})
    for i in range(spec["n"]):
        threads.append(threading.Thread(target=run))
        threads[-1].start()
        time.sleep(spec.get("stagger_ms", 50) / 1000.0)
    for t in threads:
        t.join()
    for o in out:
        print(json.dumps(o))
elif mode == "raw":
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(spec["data"].encode())
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except socket.timeout:
        got += b"<timeout>"
    print(got.decode(errors="replace"))
elif mode == "upgrade":
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: bill-service\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    print(head.decode().splitlines()[0] if head else "no head")
    s.sendall(b"hello tunnel")
    got = b""
    while len(got) < 12:
        d = s.recv(100)
        if not d:
            break
        got += d
    print("echo:" + got.decode())
elif mode == "upload":
    # A body of spec["size"] random bytes to /sha (chunked when asked): the backend's checksum
    # must be the client's.
    import hashlib, random
    data = random.Random(7).randbytes(spec["size"])
    c = http.client.HTTPConnection(host, port, timeout=20)
    if spec.get("chunked"):
        pieces = (data[i:i + 65536] for i in range(0, len(data), 65536))
        c.request("POST", spec.get("path", "/sha"), body=pieces, encode_chunked=True)
    else:
        c.request("POST", spec.get("path", "/sha"), body=data)
    r = c.getresponse()
    got = r.read().decode().strip()
    want = "%s %d" % (hashlib.sha256(data).hexdigest(), len(data))
    print(json.dumps({"status": r.status, "match": int(got == want), "body": got[:80]}))
elif mode == "download":
    # GET /bytes/N; with "stall_ms" the client reads nothing that long after the head and reports
    # the proxy's resident memory before and after the stall (spec["pid"]).
    import hashlib
    def rss():
        for l in open("/proc/%d/status" % spec["pid"]):
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
        return -1
    n = spec["size"]
    block = bytes(range(256)) * 256
    want = hashlib.sha256()
    left = n
    while left > 0:
        want.update(block[:min(left, len(block))])
        left -= min(left, len(block))
    c = http.client.HTTPConnection(host, port, timeout=20)
    before = rss() if "pid" in spec else 0
    c.request("GET", "/bytes/%d" % n)
    r = c.getresponse()
    stalled = 0
    if spec.get("stall_ms"):
        time.sleep(spec["stall_ms"] / 1000.0)
        stalled = rss()
    got = hashlib.sha256()
    size = 0
    while True:
        d = r.read(1 << 16)
        if not d:
            break
        got.update(d)
        size += len(d)
    print(json.dumps({"status": r.status, "match": int(got.digest() == want.digest()),
                      "size": size, "rss_before_kb": before, "rss_stalled_kb": stalled}))
elif mode == "bigupload":
    # n times, each on a new connection: a body of spec["size"] bytes sent whole (as curl and
    # http.client do), then the response read to its end. A reset on either side is an error.
    for i in range(spec["n"]):
        s = socket.create_connection((host, port), timeout=10)
        got, err = b"", ""
        try:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
                      % (host.encode(), spec["size"]))
            block = b"x" * 65536
            left = spec["size"]
            while left > 0:
                s.sendall(block[:min(left, len(block))])
                left -= min(left, len(block))
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except Exception as e:
            err = type(e).__name__
        s.close()
        head, _, body = got.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0
        print(json.dumps({"status": status, "body": body.decode(errors="replace").strip(),
                          "error": err}), flush=True)
elif mode == "pipeline":
    # n requests in ONE write on one connection (pipelined), then the n responses read in
    # order: each one's x-seen-path must be its request's.
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"".join(b"GET /p/%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, host.encode())
                       for i in range(spec["n"])))
    f = s.makefile("rb")
    in_order = 0
    for i in range(spec["n"]):
        status = f.readline()
        if not status:
            break
        length, seen = 0, ""
        while True:
            line = f.readline().decode().strip()
            if not line:
                break
            k, _, v = line.partition(":")
            if k.lower() == "content-length":
                length = int(v)
            if k.lower() == "x-seen-path":
                seen = v.strip()
        f.read(length)
        if status.startswith(b"HTTP/1.1 200") and seen == "/p/%d" % i:
            in_order += 1
    print(json.dumps({"in_order": in_order}))
elif mode == "stallers":
    # k connections each pipeline m downloads of `size` bytes and never read; meanwhile n
    # requests on another connection, one JSON line each.
    stalled = []
    for i in range(spec["k"]):
        t = socket.create_connection((host, port), timeout=10)
        t.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (spec["size"], host.encode())
                  * spec["m"])
        stalled.append(t)
    time.sleep(0.5)
    c = http.client.HTTPConnection(host, port, timeout=10)
    for i in range(spec["n"]):
        try:
            print(json.dumps(one(c, {})), flush=True)
        except Exception as e:
            print(json.dumps({"status": 0, "body": str(e)}), flush=True)
            c = http.client.HTTPConnection(host, port, timeout=10)
elif mode == "serverfirst":
    t = time.monotonic()
    s = socket.create_connection((host, port), timeout=5)
    if spec.get("first"):
        s.sendall(spec["first"].encode())
    f = s.makefile("rb")
    greet = f.readline().decode().strip()
    ms = int((time.monotonic() - t) * 1000)
    s.sendall(b"ping\n")
    echo = f.readline().decode().strip()
    print(json.dumps({"greet": greet, "echo": echo, "ms": ms}))
)PY";

// The seed's VirtualService routes, in their own documents (with the DestinationRule's subsets).
std::string destinationRule(const std::string& traffic_policy = {},
                            const std::string& host = "bill-service") {
  return fmt::format(R"(
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {0}
  namespace: istio-demo
spec:
  host: {0}
{1}  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
)",
                     host, traffic_policy);
}

std::string virtualService(const std::string& http_routes,
                           const std::string& host = "bill-service") {
  return fmt::format(R"(
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {0}
  namespace: istio-demo
spec:
  hosts:
  - {0}
  http:
)",
                     host) +
         http_routes;
}

// JSON lines of the client, one per response.
std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.front() == '{') out.push_back(line);
  }
  return out;
}

int field(const std::string& line, const std::string& name) {
  std::smatch m;
  if (std::regex_search(line, m, std::regex("\"" + name + "\": (\\d+)"))) return std::stoi(m[1]);
  return -1;
}

class HttpE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    if (access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is missing";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front-tomcat", kFrontIp);
    v1_ = *world_->addPod("bill-service-v1", kBillV1);
    v2_ = *world_->addPod("bill-service-v2", kBillV2);
    dir_ = makeScratchDir("remora-http-e2e");
    ASSERT_FALSE(dir_.empty());
    config_ = dir_ + "/mesh.yaml";
    std::ofstream(dir_ + "/backend.py") << kBackend;
    std::ofstream(dir_ + "/client.py") << kClient;
    std::ofstream(dir_ + "/server.py") << kSocketServer;
    hosts_dir_ = "/etc/netns/" + front_.netns;
    fs::create_directories(hosts_dir_);
    std::ofstream(hosts_dir_ + "/hosts") << "127.0.0.1 localhost\n10.1.122.241 bill-service\n";
    ASSERT_TRUE(installCapture(*world_, front_));
    backends_.push_back(world_->spawn(v1_, {kPython, dir_ + "/backend.py", kV1Reply, "80"}));
    backends_.push_back(world_->spawn(v2_, {kPython, dir_ + "/backend.py", kV2Reply, "80"}));
    for (auto& b : backends_) ASSERT_TRUE(b->waitForLine("ready", 10000)) << b->output();
  }

  void TearDown() override {
    proxy_.reset();
    backends_.clear();
    world_.reset();
    if (!hosts_dir_.empty()) fs::remove_all(hosts_dir_);
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void startProxy(const std::string& mesh, const std::vector<std::string>& extra_args = {}) {
    replaceFile(config_, seedConfig() + mesh);
    std::vector<std::string> args = {
        binaryPath("remora-proxy"), "--config", config_, "--log-level", "info", "--access-log"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    proxy_ = world_->spawn(front_, args, kProxyUid, kProxyUid);
    ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
    ASSERT_TRUE(waitFor([&] { return admin("/ready") == "LIVE\n"; })) << proxy_->output();
  }

  // The v2 backend replaced by the socket server in `mode` (a shadow that records copies).
  ::testing::AssertionResult shadowOnV2(const std::string& mode) {
    backends_[1].reset();
    backends_[1] = world_->spawn(v2_, {kPython, dir_ + "/server.py", "80", mode});
    if (backends_[1]->waitForLine("ready", 10000)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << backends_[1]->output();
  }

  std::string client(const std::string& spec_json) {
    auto out = world_->exec(front_, {kPython, dir_ + "/client.py", spec_json});
    if (!out) return "FAILED " + out.error().message;
    return out->out + out->err;
  }

  std::string admin(const std::string& path) {
    auto out = world_->exec(front_, {"curl", "-sS", "-m", "3", "http://127.0.0.1:15000" + path});
    return out && out->exit_code == 0 ? out->out : "FAILED";
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, v1_, v2_;
  std::string dir_, config_, hosts_dir_;
  std::vector<std::unique_ptr<Process>> backends_;
  std::unique_ptr<Process> proxy_;
};

// Everything to v1.
constexpr const char* kRoutesV1 = R"(  - route:
    - destination:
        host: bill-service
        subset: v1
)";

constexpr const char* kRoutes9010 = R"(  - route:
    - destination:
        host: bill-service
        subset: v1
      weight: 90
    - destination:
        host: bill-service
        subset: v2
      weight: 10
)";

TEST_F(HttpE2e, NinetyTenIsExactPerRequestOverOneKeepAliveConnection) {
  startProxy(virtualService(kRoutes9010) + destinationRule());
  const std::string out = client(R"({"mode": "seq", "n": 100})");
  EXPECT_EQ(lines(out).size(), 100u) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), 90u) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV2Reply + "\""), 10u) << out;
  // x-request-id is generated when the client sent none: UUID-shaped (version 4, variant 8),
  // and a different one for each request.
  EXPECT_EQ(countOf(out, "\"rid\": \"-\""), 0u) << out;
  const std::regex rid_re(
      "\"rid\": \"([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12})\"");
  std::set<std::string> rids;
  for (const std::string& line : lines(out)) {
    std::smatch m;
    if (std::regex_search(line, m, rid_re)) rids.insert(m[1]);
  }
  EXPECT_EQ(rids.size(), 100u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_requests_total{destination_service=\"bill-service.istio-demo\","
                   "destination_subset=\"v1\",response_code=\"200\",response_flags=\"-\"} 90"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("remora_request_duration_milliseconds_count{destination_service=\"bill-"
                   "service.istio-demo\",destination_subset=\"v2\"} 10"),
            std::string::npos)
      << m;
  // Keep-alive toward the backends too: one upstream connection each for 100 requests.
  const std::string clusters = admin("/clusters");
  EXPECT_NE(clusters.find("10.244.1.168:80::cx_total::1\n"), std::string::npos) << clusters;
  EXPECT_NE(clusters.find("10.244.1.168:80::rq_total::90\n"), std::string::npos) << clusters;
  EXPECT_TRUE(proxy_->waitForLine("http outbound", 2000)) << proxy_->output();
}

TEST_F(HttpE2e, JasonGoesToV2AndEveryoneElseToV1) {
  startProxy(virtualService(R"(  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: bill-service
        subset: v2
  - route:
    - destination:
        host: bill-service
        subset: v1
)") + destinationRule());
  std::string out = client(R"({"mode": "seq", "n": 20, "headers": {"end-user": "jason"}})");
  EXPECT_EQ(countOf(out, kV2Reply), 20u) << out;
  out = client(R"({"mode": "seq", "n": 20, "headers": {"end-user": "mary"}})");
  EXPECT_EQ(countOf(out, kV1Reply), 20u) << out;
  out = client(R"({"mode": "seq", "n": 5})");
  EXPECT_EQ(countOf(out, kV1Reply), 5u) << out;
}

TEST_F(HttpE2e, FaultAbortHitsAnExactShare) {
  startProxy(virtualService(R"(  - fault:
      abort:
        httpStatus: 500
        percentage:
          value: 5
    route:
    - destination:
        host: bill-service
        subset: v1
)") + destinationRule());
  const std::string out = client(R"({"mode": "seq", "n": 100})");
  EXPECT_EQ(countOf(out, "\"status\": 500"), 5u) << out;
  EXPECT_EQ(countOf(out, "\"status\": 200"), 95u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("response_code=\"500\",response_flags=\"FI\"} 5"), std::string::npos) << m;
}

TEST_F(HttpE2e, FaultDelayHoldsAnExactShareForItsDuration) {
  startProxy(virtualService(R"(  - fault:
      delay:
        fixedDelay: 300ms
        percentage:
          value: 10
    route:
    - destination:
        host: bill-service
        subset: v1
)") + destinationRule());
  const std::string out = client(R"({"mode": "seq", "n": 20})");
  const auto all = lines(out);
  ASSERT_EQ(all.size(), 20u) << out;
  int slow = 0;
  for (const auto& l : all) {
    const int ms = field(l, "ms");
    if (ms >= 300) ++slow;
    EXPECT_LT(ms, 1000) << l;
  }
  EXPECT_EQ(slow, 2) << out;
  EXPECT_EQ(countOf(out, kV1Reply), 20u) << out;
}

// Everything to v1, 5xx retried twice.
constexpr const char* kRoutesRetryV1 = R"(  - retries:
      attempts: 2
      retryOn: 5xx
    route:
    - destination:
        host: bill-service
        subset: v1
)";

TEST_F(HttpE2e, ARetryRescuesABackendFailingItsFirstAttempt) {
  startProxy(virtualService(kRoutesRetryV1) + destinationRule());
  const std::string out = client(R"({"mode": "seq", "n": 3, "path": "/flaky/a"})");
  EXPECT_EQ(countOf(out, "\"status\": 200"), 3u) << out;
  EXPECT_EQ(countOf(out, "\"status\": 503"), 0u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_http_retries_total 1"), std::string::npos) << m;
}

TEST_F(HttpE2e, RouteTimeoutAnswers504) {
  startProxy(virtualService(R"(  - timeout: 300ms
    route:
    - destination:
        host: bill-service
        subset: v1
)") + destinationRule());
  std::string out = client(R"({"mode": "seq", "n": 1, "path": "/delay/3000"})");
  ASSERT_EQ(lines(out).size(), 1u) << out;
  EXPECT_EQ(field(lines(out)[0], "status"), 504) << out;
  EXPECT_LT(field(lines(out)[0], "ms"), 1500) << out;
  out = client(R"({"mode": "seq", "n": 2, "path": "/"})");
  EXPECT_EQ(countOf(out, "\"status\": 200"), 2u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("response_code=\"504\",response_flags=\"UT\"} 1"), std::string::npos) << m;
}

TEST_F(HttpE2e, PoolOverflowAnswers503WithFlagUO) {
  startProxy(virtualService(kRoutesV1) + destinationRule(R"(  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
)"));
  // One request holds the only connection, one waits for it, the third overflows.
  const std::string out =
      client(R"({"mode": "parallel", "n": 3, "path": "/delay/1000", "stagger_ms": 150})");
  EXPECT_EQ(countOf(out, "\"status\": 200"), 2u) << out;
  EXPECT_EQ(countOf(out, "\"status\": 503"), 1u) << out;
  EXPECT_EQ(countOf(out, "\"overloaded\": \"true\""), 1u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("response_code=\"503\",response_flags=\"UO\"} 1"), std::string::npos) << m;
}

TEST_F(HttpE2e, OutlierDetectionEjectsAFailingEndpointAndLetsItBack) {
  // v2 answers 500 to everything; both pods serve the whole service (no subset).
  backends_[1].reset();
  backends_[1] = world_->spawn(v2_, {kPython, dir_ + "/backend.py", kV2Reply, "80", "sick"});
  ASSERT_TRUE(backends_[1]->waitForLine("ready", 10000)) << backends_[1]->output();
  startProxy(virtualService(R"(  - route:
    - destination:
        host: bill-service
)") + destinationRule(R"(  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 6s
      maxEjectionPercent: 100
)"));
  std::string out = client(R"({"mode": "seq", "n": 20})");
  // Round robin until v2's second consecutive 500 ejects it; then v1 alone.
  EXPECT_EQ(countOf(out, "\"status\": 500"), 2u) << out;
  EXPECT_EQ(countOf(out, "\"status\": 200"), 18u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_outlier_ejections_total{destination_service=\"bill-service.istio-demo\","
                   "destination_subset=\"\",destination_endpoint=\"10.244.2.74:80\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(admin("/clusters").find("10.244.2.74:80::health_flags::/failed_outlier_check"),
            std::string::npos);
  // After baseEjectionTime, at the next interval sweep (1 s apart), it takes traffic again. The
  // ejection lasts 6 s so that the checks above fit in it on a loaded machine; its end is polled.
  const auto start = std::chrono::steady_clock::now();
  bool back = false;
  while (!back && std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    back = countOf(client(R"({"mode": "seq", "n": 2})"), "\"status\": 500") >= 1;
  }
  EXPECT_TRUE(back) << "v2 took no request within 30 s of its ejection";
}

TEST_F(HttpE2e, SmugglingVectorsGet400AndAClose) {
  startProxy(virtualService(kRoutes9010) + destinationRule());
  const std::vector<std::string> vectors = {
      // CL + TE
      "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n",
      // TE obfuscation
      "POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
      // duplicate, differing Content-Length
      "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
  };
  for (const std::string& v : vectors) {
    std::string data;
    for (char c : v) {
      if (c == '\r') {
        data += "\\r";
      } else if (c == '\n') {
        data += "\\n";
      } else {
        data += c;
      }
    }
    const std::string out = client(R"({"mode": "raw", "data": ")" + data + R"("})");
    EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << v << "\n--\n" << out;
    EXPECT_EQ(out.find("<timeout>"), std::string::npos) << "not closed: " << out;
    EXPECT_EQ(out.find("bill-service"), std::string::npos) << "reached a backend: " << out;
  }
}

TEST_F(HttpE2e, SigtermDrainsKeptAliveConnectionsQuickly) {
  startProxy(virtualService(kRoutes9010) + destinationRule());
  // A connection per request (curl), then one kept alive and idle while the proxy drains.
  auto out = world_->exec(
      front_,
      {"bash", "-c", "for i in $(seq 10); do curl -sS -m 3 http://bill-service:9999/; done"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(countOf(out->out, "bill-service"), 10u) << out->out << out->err;
  EXPECT_EQ(lines(client(R"({"mode": "seq", "n": 3})")).size(), 3u);
  const auto started = std::chrono::steady_clock::now();
  ::kill(proxy_->pid(), SIGTERM);
  EXPECT_EQ(proxy_->stop(0, 8000).value_or(-1), 0) << proxy_->output();
  // The inbound grace (2 s) and no more: nothing idle holds the drain open.
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(4500))
      << proxy_->output();
}

TEST_F(HttpE2e, UpgradeBecomesATunnelAfter101) {
  startProxy(virtualService(kRoutes9010) + destinationRule());
  const std::string out = client(R"({"mode": "upgrade"})");
  EXPECT_NE(out.find("HTTP/1.1 101"), std::string::npos) << out;
  EXPECT_NE(out.find("echo:HELLO TUNNEL"), std::string::npos) << out;
}

// Every request goes to v1 and a copy of it to v2, which a shadow backend plays.
constexpr const char* kRoutesMirror = R"(  - route:
    - destination:
        host: bill-service
        subset: v1
    mirror:
      host: bill-service
      subset: v2
    mirrorPercentage:
      value: 100.0
)";

TEST_F(HttpE2e, MirrorSendsEveryRequestToTheShadowWithAShadowHost) {
  ASSERT_TRUE(shadowOnV2("answer"));
  startProxy(virtualService(kRoutesMirror) + destinationRule());
  const std::string out =
      client(R"({"mode": "seq", "n": 20, "method": "POST", "path": "/m", "body": "payload"})");
  EXPECT_EQ(lines(out).size(), 20u) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), 20u) << out;
  // The copies carry the client's Host with -shadow before the port, and the body.
  EXPECT_TRUE(waitFor([&] {
    backends_[1]->drain();
    return countOf(backends_[1]->output(),
                   "shadow /m host=bill-service-shadow:9999 body=payload") == 20;
  })) << backends_[1]->output();
  // The copies reuse kept-alive connections to the shadow (pooled per cluster as the main
  // route's are): 20 sequential copies open far fewer than 20 connections.
  EXPECT_LE(countOf(backends_[1]->output(), "accepted"), 3u) << backends_[1]->output();
  ASSERT_TRUE(waitFor([&] {
    return admin("/stats/prometheus")
               .find(
                   "remora_mirror_requests_total{destination_service=\"bill-service.istio-demo\","
                   "destination_subset=\"v2\",result=\"ok\"} 20") != std::string::npos;
  })) << admin("/stats/prometheus");
  // The main responses are counted as v1's alone.
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("destination_subset=\"v1\",response_code=\"200\",response_flags=\"-\"} 20"),
            std::string::npos)
      << m;
  EXPECT_EQ(m.find("destination_subset=\"v2\",response_code="), std::string::npos) << m;
}

// Two mirrors at different percentages (Istio's mirrors[]): v2 gets half the requests, and
// bill-shadow (a Service of its own, on the v1 pod's port 82) a tenth, each drawn exactly.
constexpr const char* kRoutesTwoMirrors = R"(  - route:
    - destination:
        host: bill-service
        subset: v1
    mirrors:
    - destination:
        host: bill-service
        subset: v2
      percentage:
        value: 50.0
    - destination:
        host: bill-shadow
        port:
          number: 7000
      percentage:
        value: 10.0
)";

const char* kShadowService = R"(
---
apiVersion: v1
kind: Service
metadata:
  name: bill-shadow
  namespace: istio-demo
spec:
  clusterIP: 10.1.122.243
  selector:
    app: bill-service
    version: v1
  ports:
  - name: http-shadow
    port: 7000
    targetPort: 82
)";

TEST_F(HttpE2e, TwoMirrorsEachGetTheirExactShare) {
  ASSERT_TRUE(shadowOnV2("answer"));
  auto shadow = world_->spawn(v1_, {kPython, dir_ + "/server.py", "82", "answer"});
  ASSERT_TRUE(shadow->waitForLine("ready", 10000)) << shadow->output();
  startProxy(virtualService(kRoutesTwoMirrors) + destinationRule() + kShadowService);
  const std::string out =
      client(R"({"mode": "seq", "n": 40, "method": "POST", "path": "/m", "body": "payload"})");
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), 40u) << out;
  const std::string copy = "shadow /m host=bill-service-shadow:9999 body=payload";
  EXPECT_TRUE(waitFor([&] {
    backends_[1]->drain();
    shadow->drain();
    return countOf(backends_[1]->output(), copy) == 20 && countOf(shadow->output(), copy) == 4;
  })) << backends_[1]->output()
      << "\n--\n"
      << shadow->output();
  ASSERT_TRUE(waitFor([&] {
    const std::string m = admin("/stats/prometheus");
    return m.find(
               "remora_mirror_requests_total{destination_service=\"bill-service.istio-demo\","
               "destination_subset=\"v2\",result=\"ok\"} 20") != std::string::npos &&
           // Another Service's port is a subset of this ServicePort, named after it.
           m.find("destination_subset=\"bill-shadow.istio-demo\",result=\"ok\"} 4") !=
               std::string::npos;
  })) << admin("/stats/prometheus");
  // Not one more copy arrives late.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  backends_[1]->drain();
  shadow->drain();
  EXPECT_EQ(countOf(backends_[1]->output(), copy), 20u);
  EXPECT_EQ(countOf(shadow->output(), copy), 4u);
}

TEST_F(HttpE2e, ASilentShadowNeitherDelaysResponsesNorGrowsPastTheCap) {
  ASSERT_TRUE(shadowOnV2("silent"));
  startProxy(virtualService(kRoutesMirror) + destinationRule());
  // One connection, hence one worker: its cap (64 copies in flight) holds the first 64 copies
  // the shadow never answers; the other 6 are dropped.
  const std::string out = client(R"({"mode": "seq", "n": 70})");
  const auto all = lines(out);
  ASSERT_EQ(all.size(), 70u) << out;
  for (const auto& l : all) {
    EXPECT_EQ(field(l, "status"), 200) << l;
    EXPECT_LT(field(l, "ms"), 500) << l;
  }
  EXPECT_EQ(countOf(out, kV1Reply), 70u) << out;
  ASSERT_TRUE(waitFor([&] {
    backends_[1]->drain();
    return countOf(backends_[1]->output(), "shadow / ") == 64;
  })) << backends_[1]->output();
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("destination_subset=\"v2\",result=\"dropped\"} 6"), std::string::npos) << m;
  EXPECT_EQ(m.find("result=\"ok\""), std::string::npos) << m;
}

// The 503 race on the mirror's pooled connections: the shadow closes each kept-alive connection
// when a second copy arrives on it, unanswered. Every such copy is sent again on a fresh
// connection, so every copy arrives and none is counted failed.
TEST_F(HttpE2e, AMirrorCopyOnAConnectionTheShadowClosesIsRetriedOnAFreshOne) {
  ASSERT_TRUE(shadowOnV2("oneshot"));
  startProxy(virtualService(kRoutesMirror) + destinationRule());
  constexpr size_t kCopies = 20;
  const std::string out =
      client(R"({"mode": "seq", "n": 20, "method": "POST", "path": "/m", "body": "payload"})");
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), kCopies) << out;
  const std::string copy = "shadow /m host=bill-service-shadow:9999 body=payload";
  EXPECT_TRUE(waitFor([&] {
    backends_[1]->drain();
    return countOf(backends_[1]->output(), copy) == kCopies;
  })) << backends_[1]->output();
  const std::string ok =
      "remora_mirror_requests_total{destination_service=\"bill-service.istio-demo\","
      "destination_subset=\"v2\",result=\"ok\"} 20";
  ASSERT_TRUE(waitFor([&] { return admin("/stats/prometheus").find(ok) != std::string::npos; }))
      << admin("/stats/prometheus") << backends_[1]->output();
  const std::string m = admin("/stats/prometheus");
  EXPECT_EQ(m.find("result=\"failed\""), std::string::npos) << m;
  // The race happened (copies met connections the shadow closed), and each time the copy was
  // resent: one race retry per copy the shadow closed unanswered.
  const size_t closed = countOf(backends_[1]->output(), "closed /m");
  EXPECT_GE(closed, 1u) << backends_[1]->output();
  std::smatch retries;
  ASSERT_TRUE(
      std::regex_search(m, retries, std::regex("remora_http_reset_race_retries_total (\\d+)")))
      << m;
  EXPECT_EQ(std::stoul(retries[1]), closed) << m;
}

// Istio's sidecar outbound HTTP listeners normalize the path (BASE) before routing, as inbound
// ones do: the VirtualService `uri` matches the normalized path, the upstream gets it (with the
// client's query), and a path that fails normalization gets Envoy's 400.
// http routes: requests whose uri matches `uri_match` (e.g. "prefix: /public/") go to v1,
// everything else to v2.
std::string routesByUri(const std::string& uri_match) {
  return fmt::format(R"(  - match:
    - uri:
        {}
    route:
    - destination:
        host: bill-service
        subset: v1
  - route:
    - destination:
        host: bill-service
        subset: v2
)",
                     uri_match);
}

TEST_F(HttpE2e, OutboundPathsAreNormalizedBeforeRouteMatchAndForwarded) {
  startProxy(virtualService(routesByUri("prefix: /public/")) + destinationRule());
  const std::string out =
      client(R"({"mode": "seq", "paths": ["/public/a", "/x/../public/a?q=1", "/%70ublic/b",)"
             R"( "/public/%2e%2E/private", "/public/./c/", "/x%00y", "/public/d"]})");
  const auto all = lines(out);
  ASSERT_EQ(all.size(), 7u) << out;
  struct Want {
    int status;
    const char* body;
    const char* path;
  };
  const Want want[] = {
      {200, kV1Reply, "/public/a"}, {200, kV1Reply, "/public/a?q=1"}, {200, kV1Reply, "/public/b"},
      {200, kV2Reply, "/private"},  {200, kV1Reply, "/public/c/"},    {400, "bad request", ""},
      {200, kV1Reply, "/public/d"},
  };
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(field(all[i], "status"), want[i].status) << all[i];
    EXPECT_NE(all[i].find(std::string("\"body\": \"") + want[i].body + "\""), std::string::npos)
        << all[i];
    EXPECT_NE(all[i].find(std::string("\"path\": \"") + want[i].path + "\""), std::string::npos)
        << all[i];
  }
}

// Istio's other meshConfig pathNormalization modes, from the ProxyConfig document (in Istio's
// shape) or the flag, change what the route matches and what the backend gets: an exact match
// on /public/a goes to v1, everything else to v2.
std::string pathNormalizationConfig(const std::string& mode) {
  return fmt::format(R"(
---
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata:
  name: proxy
spec:
  pathNormalization:
    normalization: {}
)",
                     mode);
}

struct PathWant {
  const char* body;
  const char* path;  // as the backend got it
};

void expectPaths(const std::string& out, const std::vector<PathWant>& want) {
  const auto all = lines(out);
  ASSERT_EQ(all.size(), want.size()) << out;
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(field(all[i], "status"), 200) << all[i];
    EXPECT_NE(all[i].find(std::string("\"body\": \"") + want[i].body + "\""), std::string::npos)
        << all[i];
    EXPECT_NE(all[i].find(std::string("\"path\": \"") + want[i].path + "\""), std::string::npos)
        << all[i];
  }
}

TEST_F(HttpE2e, MergeSlashesAndDecodeModesChangeTheRouteAndTheForwardedPath) {
  const std::string mesh = virtualService(routesByUri("exact: /public/a")) + destinationRule();
  startProxy(mesh + pathNormalizationConfig("MERGE_SLASHES"));
  // Runs of slashes are merged (BASE would send /public//a to v2 as sent); the query is not
  // touched; %2F is not a slash in this mode.
  expectPaths(client(R"({"mode": "seq", "paths": ["/public//a", "/public///a?q=a//b%2F",)"
                     R"( "/public%2Fa", "/x//../public/a"]})"),
              {{kV1Reply, "/public/a"},
               {kV1Reply, "/public/a?q=a//b%2F"},
               {kV2Reply, "/public%2Fa"},
               {kV2Reply, "/x/public/a"}});
  // The access log shows the path after normalization, as Envoy's :path, with the query.
  EXPECT_TRUE(proxy_->waitForLine("path=/public/a?q=a//b%2F ", 2000)) << proxy_->output();
  EXPECT_EQ(proxy_->output().find("path=/public//a"), std::string::npos) << proxy_->output();

  // A reload to DECODE_AND_MERGE_SLASHES applies to the next request: %2F and %5C are slashes.
  replaceFile(config_, seedConfig() + mesh + pathNormalizationConfig("DECODE_AND_MERGE_SLASHES"));
  ASSERT_TRUE(waitFor(
      [&] {
        return admin("/config_dump").find(R"("path_normalization": "DECODE_AND_MERGE_SLASHES")") !=
               std::string::npos;
      },
      10000))
      << admin("/config_dump");
  expectPaths(
      client(R"({"mode": "seq", "paths": ["/public%2Fa", "/public%5c%5Ca?x=%2F",)"
             R"( "/public%252Fa"]})"),
      {{kV1Reply, "/public/a"}, {kV1Reply, "/public/a?x=%2F"}, {kV2Reply, "/public%252Fa"}});
}

TEST_F(HttpE2e, NoneMatchesAndForwardsThePathAsSent) {
  // The flag wins over the ProxyConfig's MERGE_SLASHES.
  startProxy(virtualService(routesByUri("exact: /public/a")) + destinationRule() +
                 pathNormalizationConfig("MERGE_SLASHES"),
             {"--path-normalization", "NONE"});
  ASSERT_NE(admin("/config_dump").find(R"("path_normalization": "NONE")"), std::string::npos)
      << admin("/config_dump");
  expectPaths(client(R"({"mode": "seq", "paths": ["/public/a", "/x/../public/a", "/public//a",)"
                     R"( "/%70ublic/a", "/x%00y"]})"),
              {{kV1Reply, "/public/a"},
               {kV2Reply, "/x/../public/a"},
               {kV2Reply, "/public//a"},
               {kV2Reply, "/%70ublic/a"},
               {kV2Reply, "/x%00y"}});
  EXPECT_TRUE(proxy_->waitForLine("path=/x/../public/a ", 2000)) << proxy_->output();
}

// A backend that answers 413 after 64 KiB of an 8 MiB upload and closes: the client, still
// sending, gets the whole 413 every time (the proxy shuts its write side after the response and
// drops the rest of the body, a lingering close), never a reset.
TEST_F(HttpE2e, AnEarlyAnswerToALargeUploadReachesTheClientWhole) {
  backends_[0].reset();
  backends_[0] = world_->spawn(v1_, {kPython, dir_ + "/server.py", "80", "early"});
  ASSERT_TRUE(backends_[0]->waitForLine("ready", 10000)) << backends_[0]->output();
  startProxy(virtualService(R"(  - route:
    - destination:
        host: bill-service
        subset: v1
)") + destinationRule());
  const std::string out = client(R"({"mode": "bigupload", "n": 5, "size": 8388608})");
  const auto all = lines(out);
  ASSERT_EQ(all.size(), 5u) << out;
  for (const auto& l : all) {
    EXPECT_EQ(field(l, "status"), 413) << l;
    EXPECT_NE(l.find("request body over the limit: 65536 bytes read"), std::string::npos) << l;
    EXPECT_NE(l.find("\"error\": \"\""), std::string::npos) << l;
  }
  EXPECT_NE(admin("/stats/prometheus").find("remora_http_lingering_closes_total 5"),
            std::string::npos)
      << admin("/stats/prometheus");
}

// A Service of the bill pods with ports that declare no protocol (names without a protocol
// prefix, no appProtocol), so connections to them are sniffed.
std::string unnamedPortsService(const std::string& name, const std::string& cluster_ip,
                                const std::string& ports) {
  return fmt::format(R"(
---
apiVersion: v1
kind: Service
metadata:
  name: {}
  namespace: istio-demo
spec:
  type: ClusterIP
  clusterIP: {}
  selector:
    app: bill-service
  ports: {}
)",
                     name, cluster_ip, ports);
}

// bill-raw: 7777 reaches the HTTP backends, 7778 a server-first TCP service. Its
// VirtualService splits HTTP 90/10.
std::string rawService() {
  return unnamedPortsService("bill-raw", "10.1.122.242",
                             "[{name: web, port: 7777, targetPort: 80, protocol: TCP}, "
                             "{name: greet, port: 7778, targetPort: 81, protocol: TCP}]") +
         destinationRule({}, "bill-raw") +
         virtualService(std::regex_replace(kRoutes9010, std::regex("bill-service"), "bill-raw"),
                        "bill-raw");
}

TEST_F(HttpE2e, AnUnnamedPortSniffedAsHttpIsRoutedPerRequest) {
  std::ofstream(hosts_dir_ + "/hosts", std::ios::app) << "10.1.122.242 bill-raw\n";
  startProxy(rawService());
  const std::string out = client(R"({"mode": "seq", "n": 100, "host": "bill-raw", "port": 7777})");
  EXPECT_EQ(lines(out).size(), 100u) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), 90u) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV2Reply + "\""), 10u) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_protocol_sniff_total{result=\"http\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("destination_service=\"bill-raw.istio-demo\",destination_subset=\"v1\","
                   "response_code=\"200\",response_flags=\"-\"} 90"),
            std::string::npos)
      << m;
}

TEST_F(HttpE2e, AServerFirstProtocolOnAnUnnamedPortIsRelayedAfterTheSniffTimeout) {
  std::ofstream(hosts_dir_ + "/hosts", std::ios::app) << "10.1.122.242 bill-raw\n";
  for (Pod* pod : {&v1_, &v2_}) {
    backends_.push_back(
        world_->spawn(*pod, {kPython, dir_ + "/server.py", "81", "greet", pod->name}));
    ASSERT_TRUE(backends_.back()->waitForLine("ready", 10000)) << backends_.back()->output();
  }
  startProxy(rawService(), {"--protocol-detection-timeout", "300ms"});
  // The client waits for the server's greeting: the proxy's wait for a first byte ends at the
  // detection timeout (300 ms here), then the connection is relayed and the greeting comes.
  std::string out = client(R"({"mode": "serverfirst", "host": "bill-raw", "port": 7778})");
  ASSERT_EQ(lines(out).size(), 1u) << out;
  EXPECT_NE(out.find("\"greet\": \"HELLO bill-service-v"), std::string::npos) << out;
  EXPECT_NE(out.find("\"echo\": \"PING\""), std::string::npos) << out;
  EXPECT_GE(field(lines(out)[0], "ms"), 290) << out;
  EXPECT_LT(field(lines(out)[0], "ms"), 1500) << out;
  // A client that speaks first, not HTTP: relayed at once, its first bytes included.
  out = client(R"({"mode": "serverfirst", "host": "bill-raw", "port": 7778, "first": "PING\n"})");
  EXPECT_NE(out.find("\"greet\": \"HELLO bill-service-v"), std::string::npos) << out;
  EXPECT_NE(out.find("\"echo\": \"PING\""), std::string::npos) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_protocol_sniff_total{result=\"timeout\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("remora_protocol_sniff_total{result=\"tcp\"} 1\n"), std::string::npos) << m;
  // Every byte the clients sent is counted, the sniffed first bytes too: "ping\n" on the first
  // connection, "PING\n" (read by the sniffer) and "ping\n" on the second.
  long received = 0;
  std::istringstream in(m);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("remora_tcp_received_bytes_total{") &&
        line.find("bill-raw.istio-demo") != std::string::npos) {
      received += std::stol(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_EQ(received, 15) << m;
}

// Request and response bodies larger than the buffer limit (1 MiB) stream through, chunked
// and with a Content-Length, byte for byte.
TEST_F(HttpE2e, EightMiBUploadsAndDownloadsStreamThroughWithTheirChecksums) {
  startProxy(virtualService(kRoutesV1) + destinationRule());
  const int mib8 = 8 << 20;
  std::string out = client(fmt::format(R"({{"mode": "upload", "size": {}}})", mib8));
  EXPECT_NE(out.find(R"("status": 200, "match": 1)"), std::string::npos) << out;
  out = client(fmt::format(R"({{"mode": "upload", "size": {}, "chunked": true}})", mib8));
  EXPECT_NE(out.find(R"("status": 200, "match": 1)"), std::string::npos) << out;
  out = client(fmt::format(R"({{"mode": "download", "size": {}}})", mib8));
  EXPECT_NE(out.find(R"("status": 200, "match": 1)"), std::string::npos) << out;
  EXPECT_EQ(field(out, "size"), mib8) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_http_streamed_requests_total 2\n"), std::string::npos) << m;
  EXPECT_NE(m.find("destination_subset=\"v1\",response_code=\"200\",response_flags=\"-\"} 3"),
            std::string::npos)
      << m;
}

// A client that stops reading a 48 MiB response: the proxy stops reading the backend once the
// buffer limit is queued, so its resident memory stays put (the bound is generous: the kernel's
// socket buffers hold a few MiB more, outside the proxy's RSS).
TEST_F(HttpE2e, ASlowReaderDoesNotGrowTheProxysMemory) {
  startProxy(virtualService(kRoutesV1) + destinationRule());
  const int size = 48 << 20;
  const std::string out = client(fmt::format(
      R"({{"mode": "download", "size": {}, "stall_ms": 1500, "pid": {}}})", size, proxy_->pid()));
  ASSERT_EQ(lines(out).size(), 1u) << out;
  EXPECT_NE(out.find(R"("status": 200, "match": 1)"), std::string::npos) << out;
  const int before = field(out, "rss_before_kb");
  const int stalled = field(out, "rss_stalled_kb");
  ASSERT_GT(before, 0) << out;
  std::cout << "proxy RSS before " << before << " kB, while the client stalled " << stalled
            << " kB\n";
  EXPECT_LT(stalled - before, 12 * 1024) << out;
}

// Many requests in one write: the proxy's multishot receive hands them over in a few
// completions, and each is answered, in order, on the same connection.
TEST_F(HttpE2e, TwoHundredPipelinedRequestsInOneWriteAreAnsweredInOrder) {
  startProxy(virtualService(kRoutesV1) + destinationRule());
  const std::string out = client(R"({"mode": "pipeline", "n": 200})");
  EXPECT_NE(out.find(R"("in_order": 200)"), std::string::npos) << out;
}

// Twenty clients pipeline downloads they never read, on the same worker as a client doing
// ordinary requests: the L7 path copies what it receives out of the worker's shared receive
// buffers in the same completion and stops reading at its limits, so the stalled clients hold
// none of them and the other client is answered promptly.
TEST_F(HttpE2e, TwentyClientsThatNeverReadDoNotStallAnotherOnTheSameWorker) {
  startProxy(virtualService(kRoutesV1) + destinationRule(), {"--concurrency", "1"});
  const std::string out =
      client(R"({"mode": "stallers", "k": 20, "m": 4, "size": 4194304, "n": 20})");
  const auto got = lines(out);
  ASSERT_EQ(got.size(), 20u) << out;
  int slowest = 0;
  for (const auto& line : got) {
    EXPECT_NE(line.find(R"("status": 200)"), std::string::npos) << out;
    slowest = std::max(slowest, field(line, "ms"));
  }
  std::cout << "slowest of 20 requests beside 20 stalled readers: " << slowest << " ms\n";
  EXPECT_LT(slowest, 3000) << out;
}

// Retries resend a body that fits the buffer; a request whose larger body already went upstream
// in part is not retried (the backend's first 503 reaches the client).
TEST_F(HttpE2e, ARetryResendsASmallBodyButNotAStreamedOne) {
  startProxy(virtualService(kRoutesRetryV1) + destinationRule());
  std::string out =
      client(R"({"mode": "seq", "n": 1, "method": "POST", "path": "/flaky/s", "body": "small"})");
  EXPECT_EQ(countOf(out, "\"status\": 200"), 1u) << out;
  out = client(fmt::format(R"({{"mode": "upload", "size": {}, "path": "/flaky/big"}})", 2 << 20));
  EXPECT_NE(out.find(R"("status": 503)"), std::string::npos) << out;
  const std::string m = admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_http_retries_total 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("remora_http_streamed_requests_total 1\n"), std::string::npos) << m;
}

// The metric line holding every one of `parts`, or "".
std::string metricLine(const std::string& metrics, const std::vector<std::string>& parts) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (const auto& p : parts) all = all && line.find(p) != std::string::npos;
    if (all) return line;
  }
  return "";
}

// bill-in: unnamed ports of the bill pods (targetPorts 83 and 84). The client dials the v1 pod
// itself, so the front's proxy relays it as it is (L4) and v1's own proxy meets it on inbound.
TEST_F(HttpE2e, InboundSniffsAnUnnamedPortAndHandlesItsRequestsAsHttp) {
  backends_.push_back(world_->spawn(v1_, {kPython, dir_ + "/backend.py", kV1Reply, "83"}));
  backends_.push_back(world_->spawn(v1_, {kPython, dir_ + "/server.py", "84", "greet", "v1"}));
  for (size_t i = backends_.size() - 2; i < backends_.size(); ++i) {
    ASSERT_TRUE(backends_[i]->waitForLine("ready", 10000)) << backends_[i]->output();
  }
  ASSERT_TRUE(installCapture(*world_, v1_));
  startProxy(unnamedPortsService("bill-in", "10.1.122.243",
                                 "[{name: web, port: 7779, targetPort: 83, protocol: TCP}, "
                                 "{name: greet, port: 7780, targetPort: 84, protocol: TCP}]"));
  auto inbound = world_->spawn(v1_,
                               {binaryPath("remora-proxy"), "--config", config_, "--log-level",
                                "info", "--protocol-detection-timeout", "300ms"},
                               kProxyUid, kProxyUid);
  ASSERT_TRUE(inbound->waitForLine("remora-proxy started", 10000)) << inbound->output();
  auto v1Admin = [&](const std::string& path) {
    auto out = world_->exec(v1_, {"curl", "-sS", "-m", "3", "http://127.0.0.1:15000" + path});
    return out && out->exit_code == 0 ? out->out : std::string("FAILED");
  };
  ASSERT_TRUE(waitFor([&] { return v1Admin("/ready") == "LIVE\n"; })) << inbound->output();

  std::string out =
      client(fmt::format(R"({{"mode": "seq", "n": 5, "host": "{}", "port": 83}})", kBillV1));
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), 5u) << out;
  // A server-first protocol on an unnamed inbound port: relayed after the bounded wait.
  out = client(fmt::format(R"({{"mode": "serverfirst", "host": "{}", "port": 84}})", kBillV1));
  EXPECT_NE(out.find("\"greet\": \"HELLO v1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"echo\": \"PING\""), std::string::npos) << out;
  EXPECT_GE(field(out, "ms"), 290) << out;

  const std::string m = v1Admin("/stats/prometheus");
  EXPECT_NE(m.find("remora_protocol_sniff_total{result=\"http\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("remora_protocol_sniff_total{result=\"timeout\"} 1\n"), std::string::npos) << m;
  // The five requests went through v1's L7 path, counted per request.
  const std::string line = metricLine(
      m, {"remora_requests_total{", "InboundPassthroughCluster", "response_code=\"200\""});
  EXPECT_NE(line.find("} 5"), std::string::npos) << m;
}

// VirtualService sourceLabels: the proxy learns its pod's labels from a downward API labels
// file (--pod-labels-file), as Istio's sidecar does. A route for the front pod's labels is taken
// while the file holds them and not once the file changes (the proxy watches the file and
// reloads); a malformed file is refused on reload, naming file and line, and the last table
// keeps serving; at start it is refused with a non-zero exit. Requests are real curls.
TEST_F(HttpE2e, SourceLabelsRouteFollowsThePodLabelsFile) {
  const std::string labels = dir_ + "/labels";
  replaceFile(labels, "app=\"front-tomcat\"\nversion=\"v1\"");
  startProxy(virtualService(R"(  - match:
    - sourceLabels:
        app: front-tomcat
    route:
    - destination:
        host: bill-service
        subset: v2
  - route:
    - destination:
        host: bill-service
        subset: v1
)") + destinationRule(),
             {"--pod-namespace", "istio-demo", "--pod-labels-file", labels});
  auto curl5 = [&] {
    auto out = world_->exec(
        front_,
        {"bash", "-c", "for i in 1 2 3 4 5; do curl -sS -m 3 http://bill-service:9999/; done"});
    return out ? out->out + out->err : "FAILED " + out.error().message;
  };
  std::string out = curl5();
  EXPECT_EQ(countOf(out, kV2Reply), 5u) << out << proxy_->output();
  std::string dump = admin("/config_dump");
  EXPECT_NE(dump.find("\"labelsFrom\": \"file " + labels + "\""), std::string::npos) << dump;
  EXPECT_NE(dump.find("\"sourceHolds\": true"), std::string::npos) << dump;

  // The pod's labels change: the kubelet rewrites the file, and the route no longer holds.
  replaceFile(labels, "app=\"front-tomcat-canary\"\nversion=\"v1\"");
  ASSERT_TRUE(waitFor([&] {
    return admin("/config_dump").find("front-tomcat-canary") != std::string::npos;
  })) << proxy_->output();
  out = curl5();
  EXPECT_EQ(countOf(out, kV1Reply), 5u) << out << proxy_->output();
  EXPECT_EQ(countOf(out, kV2Reply), 0u) << out;

  // A malformed file: rejected with its name and line, and the last table keeps serving.
  replaceFile(labels, "app=\"front-tomcat\"\nversion=v2\n");
  EXPECT_TRUE(proxy_->waitForLine(labels + " line 2: ", 5000)) << proxy_->output();
  out = curl5();
  EXPECT_EQ(countOf(out, kV1Reply), 5u) << out << proxy_->output();

  // At start, the same file is refused before the proxy serves anything.
  auto refused =
      world_->exec(front_, {binaryPath("remora-proxy"), "--config", config_, "--pod-labels-file",
                            labels, "--admin-listen", "127.0.0.1:15100"});
  ASSERT_TRUE(refused) << refused.error().message;
  EXPECT_NE(refused->exit_code, 0);
  EXPECT_NE((refused->out + refused->err).find(labels + " line 2: "), std::string::npos)
      << refused->out << refused->err;
}

}  // namespace
}  // namespace remora::test
