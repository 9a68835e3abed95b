#pragma once

// Test certificates made in process (EC P-256, a few milliseconds each): a CA and leaves with a
// SPIFFE URI SAN, valid or expired.

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>

#include "tls/tls_context.h"

namespace remora::tls::testing {

inline std::string toPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

inline std::string toPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

inline void addExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

class TestCa {
 public:
  explicit TestCa(const std::string& name) : key_(EVP_EC_gen("P-256")) {
    cert_ = X509_new();
    X509_set_version(cert_, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert_), serial_++);
    X509_gmtime_adj(X509_getm_notBefore(cert_), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert_), 86400);
    X509_NAME* subject = X509_get_subject_name(cert_);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert_, subject);
    X509_set_pubkey(cert_, key_);
    addExtension(cert_, cert_, NID_basic_constraints, "critical,CA:TRUE");
    addExtension(cert_, cert_, NID_key_usage, "critical,keyCertSign,cRLSign");
    X509_sign(cert_, key_, EVP_sha256());
  }
  ~TestCa() {
    X509_free(cert_);
    EVP_PKEY_free(key_);
  }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  std::string pem() const { return toPem(cert_); }

  // A leaf for `uri` (no SAN when empty), valid from now + not_before_s to now + not_after_s.
  Credentials issue(const std::string& uri, long not_before_s = -60,  // NOLINT
                    long not_after_s = 3600) {                        // NOLINT
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial_++);
    X509_gmtime_adj(X509_getm_notBefore(cert), not_before_s);
    X509_gmtime_adj(X509_getm_notAfter(cert), not_after_s);
    X509_set_issuer_name(cert, X509_get_subject_name(cert_));
    X509_set_pubkey(cert, key);
    addExtension(cert, cert_, NID_basic_constraints, "critical,CA:FALSE");
    addExtension(cert, cert_, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!uri.empty()) addExtension(cert, cert_, NID_subject_alt_name, ("URI:" + uri).c_str());
    X509_sign(cert, key_, EVP_sha256());
    Credentials c{toPem(cert), toPem(key), pem()};
    X509_free(cert);
    EVP_PKEY_free(key);
    return c;
  }

 private:
  EVP_PKEY* key_;
  X509* cert_ = nullptr;
  long serial_ = 1;  // NOLINT(google-runtime-int)
};

}  // namespace remora::tls::testing
