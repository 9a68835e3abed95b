// DestinationRule trafficPolicy.tls SIMPLE and MUTUAL (docs/TLS.md, "Outbound"): the front pod
// runs remora-init and remora-proxy; the ext pod runs no proxy, only a Python ssl server the
// test starts, with a server certificate for good.example.com from a test CA made with the
// openssl CLI. The app in the front pod speaks plaintext HTTP; the proxy originates TLS with the
// rule's files, SNI and subjectAltNames. The server answers with the SNI it saw and the subject
// of the client certificate it got, so the test sees what crossed the wire.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "tls_fixture.h"

namespace remora::test {
namespace {

constexpr const char* kExtIp = "10.244.1.50";

// Port 8443: TLS, no client certificate asked. 8444: TLS, a client certificate from the test CA
// required. 8445: the same server as 8443 (for the wrong-SAN rule). Each connection: the
// handshake, the request head, then "sni=<name> client=<subject CN or none>" and close.
constexpr const char* kServer = R"(d = sys.argv[1]
def serve(port, require):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d + '/server.pem', d + '/server.key')
    if require:
        ctx.load_verify_locations(d + '/ca.pem')
        ctx.verify_mode = ssl.CERT_REQUIRED
    def sni(sock, name, _):
        sock.sni_seen = name
    ctx.sni_callback = sni
    ls = listener(port)
    while True:
        raw, _ = ls.accept()
        try:
            s = ctx.wrap_socket(raw, server_side=True)
            read_head(s)
            cert = s.getpeercert()
            cn = 'none'
            if cert:
                cn = dict(x[0] for x in cert['subject']).get('commonName', '?')
            answer(s, 'sni=%s client=%s\n' % (getattr(s, 'sni_seen', None), cn))
            s.close()
        except Exception as e:
            print('port %d: %s' % (port, e), flush=True)
            raw.close()
for port, require in ((8443, False), (8444, True), (8445, False)):
    threading.Thread(target=serve, args=(port, require), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
)";

const std::string kWorld = std::string(kFrontPod) + R"(apiVersion: v1
kind: Pod
metadata:
  name: ext
  namespace: istio-demo
  labels: {app: ext}
spec:
  containers: [{name: app, image: x}]
status: {podIP: 10.244.1.50}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: istio-demo}
spec:
  clusterIP: 10.1.0.50
  selector: {app: ext}
  ports:
  - {name: tcp-simple, port: 8443}
  - {name: tcp-mutual, port: 8444}
  - {name: tcp-wrong-san, port: 8445}
  - {name: tcp-simple-to-mutual, port: 8446, targetPort: 8444}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: istio-demo}
spec:
  host: ext.istio-demo.svc.cluster.local
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: {DIR}/ca.pem
      sni: good.example.com
      subjectAltNames: [good.example.com]
    portLevelSettings:
    - port: {number: 8444}
      tls:
        mode: MUTUAL
        clientCertificate: {DIR}/client.pem
        privateKey: {DIR}/client.key
        caCertificates: {DIR}/ca.pem
        sni: good.example.com
    - port: {number: 8445}
      tls:
        mode: SIMPLE
        caCertificates: {DIR}/ca.pem
        sni: good.example.com
        subjectAltNames: [other.example.com]
)";

class TlsOriginationE2e : public MeshTlsTest {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    setUpMesh();
    front_ = *world_->addPod("front", kFrontIp);
    ext_ = *world_->addPod("ext", kExtIp);
    makeCa(front_);
    issue("front", kFrontId);
    sign(dir_ + "/server", "good.example.com", "DNS:good.example.com");
    sign(dir_ + "/client", "remora-client", "DNS:remora-client");
    installInit(front_);
    std::ofstream(dir_ + "/server.py") << kPythonPrelude << kServer;
    server_ = world_->spawn(ext_, {"python3", dir_ + "/server.py", dir_});
    ASSERT_TRUE(server_->waitForLine("ready", 10000)) << server_->output();
    std::string config = kWorld;
    for (size_t at = config.find("{DIR}"); at != std::string::npos; at = config.find("{DIR}")) {
      config.replace(at, 5, dir_);
    }
    writeConfig(config);
    proxy_ = startProxy(front_, "front");
  }

  void TearDown() override {
    proxy_.reset();
    server_.reset();
    tearDownMesh();
  }

  std::string failures(const std::string& reason) {
    const std::string m = metrics(front_);
    const std::string key = "remora_tls_handshake_failures_total{reason=\"" + reason + "\"} ";
    const size_t at = m.find(key);
    return at == std::string::npos ? "absent"
                                   : m.substr(at + key.size(), m.find('\n', at) - at - key.size());
  }

  Pod front_, ext_;
  std::unique_ptr<Process> server_, proxy_;
};

TEST_F(TlsOriginationE2e, SimpleSendsTheSniAndChecksTheSan) {
  // The app speaks plaintext to the service; the server saw TLS with the rule's SNI and no
  // client certificate.
  EXPECT_EQ(curl(front_, "http://10.1.0.50:8443/"), "sni=good.example.com client=none\n")
      << server_->output();
  EXPECT_NE(metrics(front_).find("remora_tls_originated_total 1"), std::string::npos);
  EXPECT_EQ(failures("subject_alt_name"), "0");
}

TEST_F(TlsOriginationE2e, WrongSubjectAltNameFailsAndCounts) {
  EXPECT_EQ(curl(front_, "http://10.1.0.50:8445/"), "FAILED");
  EXPECT_EQ(failures("subject_alt_name"), "1");
  proxy_->drain();
  EXPECT_NE(proxy_->output().find("match none of the DestinationRule's subjectAltNames "
                                  "[other.example.com]"),
            std::string::npos)
      << proxy_->output();
}

TEST_F(TlsOriginationE2e, MutualPresentsTheClientCertificate) {
  EXPECT_EQ(curl(front_, "http://10.1.0.50:8444/"), "sni=good.example.com client=remora-client\n")
      << server_->output();
}

TEST_F(TlsOriginationE2e, SimpleToAServerRequiringAClientCertificateIsRefused) {
  // Port 8446 is the MUTUAL server, but the rule for 8446 is the SIMPLE default: no certificate.
  EXPECT_EQ(curl(front_, "http://10.1.0.50:8446/"), "FAILED");
  EXPECT_EQ(failures("handshake"), "1");
  server_->drain();
  EXPECT_NE(server_->output().find("port 8444"), std::string::npos) << server_->output();
}

TEST_F(TlsOriginationE2e, UnreadableFilesCloseTheConnectionNeverPlaintext) {
  std::filesystem::remove(dir_ + "/client.key");
  EXPECT_EQ(curl(front_, "http://10.1.0.50:8444/"), "FAILED");
  EXPECT_EQ(failures("config"), "1");
  proxy_->drain();
  EXPECT_NE(proxy_->output().find("client.key"), std::string::npos) << proxy_->output();
  // The connection was closed before any byte: the server saw no plaintext request.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server_->drain();
  EXPECT_EQ(server_->output().find("HTTP_REQUEST"), std::string::npos) << server_->output();
  EXPECT_EQ(server_->output().find("WRONG_VERSION"), std::string::npos) << server_->output();
}

}  // namespace
}  // namespace remora::test
