#pragma once

// The fixture of the mTLS e2e tests (tls_e2e_test.cc, tls_http_e2e_test.cc): a temporary
// directory, a test CA and workload certificates made with the openssl CLI (EC P-256), the
// mesh file, and each pod's remora-proxy started as uid 1337 with its own --tls-dir.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {

inline constexpr uint32_t kMeshProxyUid = 1337;
inline constexpr const char* kFrontId = "spiffe://cluster.local/ns/istio-demo/sa/front";
inline constexpr const char* kBillId = "spiffe://cluster.local/ns/istio-demo/sa/bill";

// The meshed front pod (service account front) of both test worlds, ending with "---".
inline constexpr const char* kFrontPod = R"(apiVersion: v1
kind: Pod
metadata:
  name: front-tomcat
  namespace: istio-demo
  labels: {app: front-tomcat, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: front
  containers: [{name: app, image: x}]
status: {podIP: 10.244.0.10}
---
)";

// A namespace-wide PeerAuthentication for istio-demo.
inline std::string peerAuthentication(const std::string& mode) {
  return fmt::format(R"(---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-demo}}
spec:
  mtls: {{mode: {}}}
)",
                     mode);
}

// The start of the Python servers the tests run (python3 from Debian, stdlib only):
// listener(port) binds 0.0.0.0:port, read_head(sock) reads up to the end of a request head, and
// answer(sock, body) sends a 200 with that body.
inline constexpr const char* kPythonPrelude = R"(import socket, ssl, sys, threading
def listener(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('0.0.0.0', port))
    ls.listen(16)
    return ls
def read_head(s):
    data = b''
    while b'\r\n\r\n' not in data:
        more = s.recv(4096)
        if not more:
            break
        data += more
def answer(s, body):
    s.sendall(('HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s'
               % (len(body), body)).encode())
)";

class MeshTlsTest : public ::testing::Test {
 protected:
  // The namespaces, the directory and the CA; `tool` is the pod the openssl CLI runs in.
  void setUpMesh() {
    world_ = std::make_unique<NetnsWorld>();
    dir_ = makeScratchDir("remora-tls-e2e");
    ASSERT_FALSE(dir_.empty());
  }

  void makeCa(const Pod& tool) {
    tool_ = tool;
    ASSERT_TRUE(
        openssl({"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", dir_ + "/ca.key"}));
    ASSERT_TRUE(openssl({"req", "-x509", "-new", "-key", dir_ + "/ca.key", "-subj",
                         "/CN=remora-test-ca", "-days", "2", "-out", dir_ + "/ca.pem"}));
  }

  void tearDownMesh() {
    world_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void installInit(const Pod& pod) { ASSERT_TRUE(installCapture(*world_, pod)); }

  bool openssl(std::vector<std::string> args) {
    args.insert(args.begin(), "openssl");
    auto out = world_->exec(tool_, args);
    return out.ok() && out->exit_code == 0;
  }
  // Writes cert-chain.pem, key.pem and root-cert.pem for `id` into dir_/name, each replaced by
  // rename as a kubelet projected volume would. days 0 makes a certificate that is already
  // expired by the time it is read.
  void issue(const std::string& name, const std::string& id, int days = 1) {
    const std::string d = dir_ + "/" + name;
    std::filesystem::create_directories(d);
    chmod(d.c_str(), 0755);
    const std::string work = dir_ + "/work-" + name;
    sign(work, name, "URI:" + id, days);
    for (auto [from, to] : {std::pair{work + ".key", std::string("key.pem")},
                            std::pair{dir_ + "/ca.pem", std::string("root-cert.pem")},
                            std::pair{work + ".pem", std::string("cert-chain.pem")}}) {
      const std::string tmp = d + "/." + to + ".tmp";
      std::filesystem::copy_file(from, tmp, std::filesystem::copy_options::overwrite_existing);
      chmod(tmp.c_str(), 0644);
      std::filesystem::rename(tmp, d + "/" + to);
    }
  }

  // A key `base`.key and a certificate `base`.pem from the test CA for subject CN `cn` with the
  // subjectAltName `san` ("URI:spiffe://...", "DNS:name"), both readable by the proxy's uid.
  void sign(const std::string& base, const std::string& cn, const std::string& san, int days = 1) {
    ASSERT_TRUE(
        openssl({"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", base + ".key"}));
    ASSERT_TRUE(openssl(
        {"req", "-new", "-key", base + ".key", "-subj", "/CN=" + cn, "-out", base + ".csr"}));
    std::ofstream(base + ".ext") << "subjectAltName=" << san
                                 << "\nextendedKeyUsage=serverAuth,clientAuth\n";
    ASSERT_TRUE(openssl({"x509", "-req", "-in", base + ".csr", "-CA", dir_ + "/ca.pem", "-CAkey",
                         dir_ + "/ca.key", "-CAcreateserial", "-days", std::to_string(days),
                         "-extfile", base + ".ext", "-out", base + ".pem"}));
    for (const std::string& f : {base + ".key", base + ".pem", dir_ + "/ca.pem"}) {
      chmod(f.c_str(), 0644);
    }
  }

  void writeConfig(const std::string& text) { replaceFile(dir_ + "/mesh.yaml", text); }

  std::unique_ptr<Process> startProxy(const Pod& pod, const std::string& certs) {
    auto p = world_->spawn(pod,
                           {binaryPath("remora-proxy"), "--config", dir_ + "/mesh.yaml",
                            "--tls-dir", dir_ + "/" + certs, "--log-level", "debug"},
                           kMeshProxyUid, kMeshProxyUid);
    EXPECT_TRUE(p->waitForLine("remora-proxy started", 10000)) << p->output();
    EXPECT_TRUE(waitFor([&] { return curl(pod, "http://127.0.0.1:15000/ready") == "LIVE\n"; }));
    return p;
  }

  std::string curl(const Pod& pod, const std::string& url) {
    auto out = world_->exec(pod, {"curl", "-sS", "-m", "3", url});
    if (!out || out->exit_code != 0) return "FAILED";
    return out->out;
  }

  std::string metrics(const Pod& pod) {
    return curl(pod, "http://127.0.0.1:15000/stats/prometheus");
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod tool_;
  std::string dir_;
};

}  // namespace remora::test
