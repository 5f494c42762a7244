// TLS to etcd and Patroni: libcurl failures in operator words, the TLS settings discovered
// from patroni.yml (as patronictl reads them) and set in fener.yaml, and the certificate
// lint with certificates made here, at test time.
#include <doctest/doctest.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "checks/config_lint.hpp"
#include "checks/etcd_health.hpp"
#include "checks/patroni_node.hpp"
#include "checks/registry.hpp"
#include "src/cluster_http.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"

using namespace fener;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "fener-tls-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
  std::string at(const std::string& name) const { return (path / name).string(); }
};

std::string error_of(const LoadOptions& o) {
  try {
    Config c = load_config(o);
    build_checks(c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- certificates made at test time ------------------------------------------------------

constexpr std::time_t kT0 = 1'700'000'000;  // 2023-11-14 22:13:20 UTC
constexpr long kDay = 86400;

struct KeyPair {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ~KeyPair() { EVP_PKEY_free(key); }
  void write(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f != nullptr);
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
  }
};

// A self-signed certificate valid from kT0 for `days` days, written as PEM to path.
void write_cert(const std::string& path, const KeyPair& k, long days, const char* cn = "fener") {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  std::time_t t0 = kT0;
  X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &t0);
  X509_time_adj_ex(X509_getm_notAfter(x), 0, days * kDay, &t0);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_set_pubkey(x, k.key);
  X509_sign(x, k.key, EVP_sha256());
  FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  PEM_write_X509(f, x);
  std::fclose(f);
  X509_free(x);
}

std::optional<Status> worst(const std::vector<LintFinding>& v) {
  std::optional<Status> w;
  for (const auto& f : v)
    if (!w || severity(f.severity) > severity(*w)) w = f.severity;
  return w;
}

// A TCP peer that answers any connection with a plain HTTP error at once, as a TLS port
// spoken to in clear text (or an http port spoken to in TLS) does.
struct PlainPeer {
  explicit PlainPeer(asio::io_context& io)
      : acceptor(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io, loop(), asio::detached);
  }
  asio::awaitable<void> loop() {
    for (;;) {
      asio::ip::tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
      const std::string resp = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
      const auto buffer = asio::buffer(resp);
      co_await asio::async_write(s, buffer, asio::use_awaitable);
      boost::system::error_code ignored;
      s.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    }
  }
  int port() const { return acceptor.local_endpoint().port(); }
  asio::ip::tcp::acceptor acceptor;
};

}  // namespace

TEST_CASE("tls: curl's TLS failures in operator words") {
  TlsSettings tls;
  tls.ca_file = "/etc/fener/ca.pem";
  tls.cert_file = "/etc/fener/client.pem";
  tls.key_file = "/etc/fener/client.key";
  TlsSettings no_cert;
  no_cert.ca_file = tls.ca_file;

  CHECK(tls_failure_message(CURLE_PEER_FAILED_VERIFICATION,
                            "SSL certificate problem: self-signed certificate in certificate chain",
                            tls) ==
        "TLS: server certificate not trusted (CA /etc/fener/ca.pem): self-signed certificate "
        "in certificate chain");
  CHECK(tls_failure_message(CURLE_PEER_FAILED_VERIFICATION,
                            "SSL certificate problem: unable to get local issuer certificate",
                            TlsSettings{}) ==
        "TLS: server certificate not trusted (system CA store; no CA file configured): unable "
        "to get local issuer certificate");
  CHECK(tls_failure_message(CURLE_PEER_FAILED_VERIFICATION,
                            "SSL certificate problem: certificate has expired", tls) ==
        "TLS: server certificate expired (CA /etc/fener/ca.pem): certificate has expired");
  CHECK(tls_failure_message(
            CURLE_PEER_FAILED_VERIFICATION,
            "SSL: no alternative certificate subject name matches target host name '127.0.3.9'",
            tls)
            ->rfind("TLS: server certificate does not name the host asked for: ", 0) == 0);
  CHECK(tls_failure_message(CURLE_SSL_CACERT_BADFILE,
                            "error setting certificate file: /etc/fener/ca.pem", tls) ==
        "TLS: cannot use the CA file /etc/fener/ca.pem: error setting certificate file: "
        "/etc/fener/ca.pem");
  CHECK(tls_failure_message(CURLE_SSL_CERTPROBLEM,
                            "could not load PEM client certificate from /etc/fener/client.pem",
                            tls) ==
        "TLS: cannot use the client certificate or key (certificate /etc/fener/client.pem) (key "
        "/etc/fener/client.key): could not load PEM client certificate from "
        "/etc/fener/client.pem");
  // TLS 1.3: the server's verdict on our certificate arrives with the first read.
  CHECK(tls_failure_message(CURLE_RECV_ERROR,
                            "OpenSSL SSL_read: error:0A00045C:SSL routines::tlsv13 alert "
                            "certificate required, errno 0",
                            no_cert) ==
        "TLS: the server requires a client certificate and none is configured: tlsv13 alert "
        "certificate required");
  CHECK(tls_failure_message(CURLE_RECV_ERROR,
                            "OpenSSL SSL_read: error:0A000415:SSL routines::sslv3 alert "
                            "certificate expired, errno 0",
                            tls) ==
        "TLS: client certificate rejected by the server: expired (certificate "
        "/etc/fener/client.pem): sslv3 alert certificate expired");
  CHECK(tls_failure_message(CURLE_SSL_CONNECT_ERROR,
                            "OpenSSL/3.0.11: error:0A000418:SSL routines::tlsv1 alert unknown ca",
                            tls) ==
        "TLS: client certificate rejected by the server (certificate /etc/fener/client.pem): "
        "tlsv1 alert unknown ca");
  CHECK(tls_failure_message(CURLE_SSL_CONNECT_ERROR,
                            "error:0A00010B:SSL routines::wrong version number", tls) ==
        "TLS: the server does not speak TLS there (an http:// endpoint?): wrong version number");
  CHECK(tls_failure_message(CURLE_SSL_CONNECT_ERROR, "something else entirely", tls) ==
        "TLS: handshake failed: something else entirely");
  // The server dropped us after asking for a certificate, without an alert curl kept.
  const std::string closed =
      "the server closed the connection after the handshake, having asked for a client "
      "certificate";
  CHECK(tls_failure_message(CURLE_SEND_ERROR, closed, no_cert) ==
        "TLS: the server requires a client certificate and none is configured: " + closed);
  CHECK(tls_failure_message(CURLE_GOT_NOTHING, closed, tls) ==
        "TLS: client certificate rejected by the server (certificate /etc/fener/client.pem): " +
            closed + " (expired, or not signed by a CA it trusts?)");
  CHECK(
      tls_failure_message(CURLE_RECV_ERROR, "the server sent TLS alert \"bad certificate\"", tls) ==
      "TLS: client certificate rejected by the server (certificate /etc/fener/client.pem): the "
      "server sent TLS alert \"bad certificate\"");
  CHECK(tls_failure_message(CURLE_RECV_ERROR, "the server sent TLS alert \"certificate required\"",
                            no_cert) ==
        "TLS: the server requires a client certificate and none is configured: the server sent "
        "TLS alert \"certificate required\"");
  // Not about TLS: left to the other classes.
  CHECK_FALSE(tls_failure_message(CURLE_RECV_ERROR, "Connection reset by peer", tls));
  CHECK_FALSE(tls_failure_message(CURLE_COULDNT_CONNECT, "Failed to connect", tls));
  CHECK_FALSE(tls_failure_message(CURLE_OPERATION_TIMEDOUT, "timed out", tls));
}

TEST_CASE("tls: https to a port that speaks plain HTTP is a prompt tls error") {
  asio::io_context io;
  PlainPeer peer(io);
  HttpClient http(io);
  std::optional<HttpResult> got;
  HttpRequest req = tls_request(TlsSettings{}, "https://127.0.0.1:" + std::to_string(peer.port()),
                                std::chrono::seconds(3));
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got = co_await http.fetch(std::move(req));
        io.stop();
      },
      asio::detached);
  io.run_for(std::chrono::seconds(5));
  REQUIRE(got);
  CHECK(got->error == HttpError::tls);
  CHECK(to_string(got->error) == "tls");
  CHECK(got->describe().rfind("TLS: ", 0) == 0);
  CHECK(got->elapsed < std::chrono::seconds(2));
  MESSAGE("https to plain HTTP: ", got->describe(), " after ", got->elapsed.count(), " ms");
}

TEST_CASE("tls: patroni.yml's TLS settings are found as Patroni and patronictl use them") {
  TempDir d;
  const std::string yml =
      "scope: liman\nname: kaptan1\n"
      "restapi:\n"
      "  listen: 127.0.3.2:8008\n"
      "  connect_address: 127.0.3.2:8008\n"
      "  certfile: /pki/rest.pem\n"
      "  keyfile: /pki/rest.key\n"
      "  cafile: /pki/ca.pem\n"
      "  verify_client: optional\n"
      "ctl:\n"
      "  insecure: true\n"
      "etcd3:\n"
      "  protocol: https\n"
      "  hosts: 127.0.3.1:2379,127.0.3.2:2379\n"
      "  cacert: /pki/ca.pem\n"
      "  cert: /pki/etcd-client.pem\n"
      "  key: /pki/etcd-client.key\n";
  LoadOptions o;
  o.patroni_config = d.write("patroni.yml", yml);
  o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n");
  Config c = load_config(o);
  CHECK(c.patroni_url == "https://127.0.3.2:8008");
  CHECK(c.etcd_endpoints ==
        std::vector<std::string>{"https://127.0.3.1:2379", "https://127.0.3.2:2379"});
  CHECK(c.etcd_tls.ca_file == "/pki/ca.pem");
  CHECK(c.etcd_tls.cert_file == "/pki/etcd-client.pem");
  CHECK(c.etcd_tls.key_file == "/pki/etcd-client.key");
  CHECK(c.etcd_tls.cert_source == *o.patroni_config + " etcd3.cert");
  CHECK(c.etcd_tls.verify_peer);
  // patronictl: restapi's files stand in for ctl's; insecure with a client certificate still
  // verifies the chain, only not the host name.
  CHECK(c.patroni_tls.ca_file == "/pki/ca.pem");
  CHECK(c.patroni_tls.ca_source == *o.patroni_config + " restapi.cafile");
  CHECK(c.patroni_tls.cert_file == "/pki/rest.pem");
  CHECK(c.patroni_tls.key_file == "/pki/rest.key");
  CHECK(c.patroni_tls.verify_peer);
  CHECK_FALSE(c.patroni_tls.verify_host);
  // The lint's list: Patroni's REST API certificate and etcd's client certificate (the
  // Patroni client set is the same files, listed once).
  REQUIRE(c.tls_files.size() == 2);
  CHECK(c.tls_files[0].what == "Patroni REST API certificate");
  CHECK(c.tls_files[0].cert_file == "/pki/rest.pem");
  CHECK(c.tls_files[1].what == "etcd client certificate");
  CHECK(c.tls_files[1].key_file == "/pki/etcd-client.key");
  // Requests built from the Config carry the settings.
  auto req = etcd_request(c, c.etcd_endpoints[0] + "/health", std::chrono::seconds(1));
  CHECK(req.tls == c.etcd_tls);
  CHECK(patroni_request(c, c.patroni_url + "/patroni", std::chrono::seconds(1)).tls ==
        c.patroni_tls);

  // ctl's own files win; insecure without a client certificate verifies nothing.
  const std::string yml2 =
      "scope: liman\nname: kaptan1\n"
      "restapi:\n  listen: 127.0.3.2:8008\n  certfile: /pki/rest.pem\n"
      "ctl:\n  cacert: /pki/ctl-ca.pem\n  certfile: /pki/ctl.pem\n"
      "  keyfile: /pki/ctl.key\n"
      "etcd:\n  host: 127.0.3.1:2379\n";
  o.patroni_config = d.write("patroni2.yml", yml2);
  Config c2 = load_config(o);
  CHECK(c2.patroni_tls.ca_file == "/pki/ctl-ca.pem");
  CHECK(c2.patroni_tls.cert_file == "/pki/ctl.pem");
  CHECK(c2.patroni_tls.key_file == "/pki/ctl.key");
  CHECK(c2.patroni_tls.verify_peer);
  CHECK(c2.patroni_tls.verify_host);
  CHECK(c2.etcd_tls == TlsSettings{});
  REQUIRE(c2.tls_files.size() == 2);
  CHECK(c2.tls_files[1].what == "Patroni REST API client certificate");

  const std::string yml3 =
      "scope: liman\nname: kaptan1\n"
      "restapi:\n  listen: 127.0.3.2:8008\n"
      "ctl:\n  insecure: true\n";
  o.patroni_config = d.write("patroni3.yml", yml3);
  Config c3 = load_config(o);
  CHECK(c3.patroni_url == "http://127.0.3.2:8008");
  CHECK_FALSE(c3.patroni_tls.verify_peer);
  CHECK(c3.tls_files.empty());
}

TEST_CASE("tls: fener.yaml sets or overrides the files, with clear errors") {
  TempDir d;
  const std::string ca = d.write("ca.pem", "x");
  const std::string cert = d.write("client.pem", "x");
  const std::string key = d.write("client.key", "x");
  LoadOptions o;
  o.patroni_config = d.write("patroni.yml",
                             "scope: liman\nname: kaptan1\nrestapi:\n  listen: 127.0.3.2:8008\n"
                             "etcd:\n  protocol: https\n  hosts: 127.0.3.1:2379\n"
                             "  cacert: /pki/ca.pem\n  cert: /pki/etcd.pem\n");
  o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n  cacert: " + ca +
                                            "\n  cert: " + cert + "\n  key: " + key +
                                            "\npatroni:\n  cacert: " + ca + "\n  verify: false\n");
  Config c = load_config(o);
  CHECK(c.etcd_tls.ca_file == ca);
  CHECK(c.etcd_tls.cert_file == cert);
  CHECK(c.etcd_tls.key_file == key);
  CHECK(c.etcd_tls.ca_source == o.config_file->c_str() + std::string(" etcd.cacert"));
  CHECK(c.patroni_tls.ca_file == ca);
  CHECK_FALSE(c.patroni_tls.verify_peer);
  CHECK_FALSE(c.patroni_tls.verify_host);

  // An empty value switches a discovered file off.
  o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n  cert: \"\"\n");
  Config c2 = load_config(o);
  CHECK(c2.etcd_tls.cert_file.empty());
  CHECK(c2.etcd_tls.ca_file == "/pki/ca.pem");

  const std::string f = d.at("fener.yaml");
  auto with = [&](const std::string& text) {
    o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n" + text);
    return error_of(o);
  };
  CHECK(with("  cacert: /nonexistent/ca.pem\n") ==
        f + ":3:11: etcd.cacert: cannot read /nonexistent/ca.pem (No such file or directory); "
            "expected a readable PEM file");
  CHECK(with("  key: " + key + "\n  cert: \"\"\n") ==
        f + ":3:8: etcd.key: a key without a certificate: set cert (the client certificate) too");
  CHECK(with("patroni:\n  cert: /nonexistent/c.pem\n") ==
        f + ":4:9: patroni.cert: cannot read /nonexistent/c.pem (No such file or directory); "
            "expected a readable PEM file");
  CHECK(with("patroni:\n  verify: maybe\n").find(f + ":4:11: patroni.verify: expected") == 0);
  CHECK(with("  certs: x\n").find(f + ":3:3: etcd.certs: unknown key") == 0);
}

TEST_CASE("tls: the certificate lint: valid, expiring, expired, not yet valid, wrong key") {
  TempDir d;
  KeyPair k, other;
  const std::string cert = d.at("client.pem"), key = d.at("client.key");
  write_cert(cert, k, 30);
  k.write(key);
  const std::string other_key = d.at("other.key");
  other.write(other_key);
  TlsFileSet set;
  set.what = "etcd client certificate";
  set.cert_file = cert;
  set.key_file = key;
  set.ca_file = cert;  // self-signed: its own CA
  set.source = "fener.yaml etcd";

  std::vector<std::string> checked;
  CHECK(lint_tls_files({set}, kT0 + 10 * kDay, 14, &checked).empty());
  CHECK(checked == std::vector<std::string>{cert, key});

  auto soon = lint_tls_files({set}, kT0 + 20 * kDay, 14);
  REQUIRE(!soon.empty());
  CHECK(worst(soon) == Status::warning);
  CHECK(soon[0].message.find("etcd client certificate (/CN=fener; from fener.yaml etcd) expires "
                             "on 2023-12-14 22:13 UTC, in 10 days") == 0);
  CHECK(lint_tls_files({set}, kT0 + 20 * kDay, 5).empty());  // a shorter threshold

  auto expired = lint_tls_files({set}, kT0 + 31 * kDay, 14);
  CHECK(worst(expired) == Status::critical);
  CHECK(expired[0].file == cert);
  CHECK(expired[0].message ==
        "etcd client certificate (/CN=fener; from fener.yaml etcd) expired on 2023-12-14 22:13 "
        "UTC");

  auto early = lint_tls_files({set}, kT0 - kDay, 14);
  CHECK(worst(early) == Status::critical);
  CHECK(early[0].message.find("is not valid before 2023-11-14 22:13 UTC") != std::string::npos);

  TlsFileSet wrong = set;
  wrong.key_file = other_key;
  auto mismatch = lint_tls_files({wrong}, kT0 + kDay, 14);
  REQUIRE(mismatch.size() == 1);
  CHECK(mismatch[0].severity == Status::critical);
  CHECK(mismatch[0].message == "the key does not belong to the etcd client certificate " + cert +
                                   " (from fener.yaml etcd)");

  TlsFileSet missing = set;
  missing.cert_file = d.at("nope.pem");
  auto gone = lint_tls_files({missing}, kT0 + kDay, 14);
  REQUIRE(!gone.empty());
  CHECK(gone[0].severity == Status::critical);
  CHECK(gone[0].message ==
        "cannot read the certificate of the etcd client certificate (No such file or "
        "directory; from fener.yaml etcd)");

  TlsFileSet garbage = set;
  garbage.cert_file = d.write("garbage.pem", "not a certificate\n");
  garbage.ca_file = d.write("empty-ca.pem", "");
  auto bad = lint_tls_files({garbage}, kT0 + kDay, 14);
  REQUIRE(bad.size() == 2);  // the certificate and the CA file
  CHECK(bad[0].message.find("the etcd client certificate is not a PEM certificate") == 0);
  CHECK(bad[1].message ==
        "the CA file of the etcd client certificate holds no PEM certificate "
        "(from fener.yaml etcd)");

  // The key inside the certificate file, as Patroni allows.
  TlsFileSet combined = set;
  combined.cert_file = d.at("combined.pem");
  {
    std::ofstream out(combined.cert_file);
    std::ifstream a(cert), b(key);
    out << a.rdbuf() << b.rdbuf();
  }
  combined.key_file.clear();
  CHECK(lint_tls_files({combined}, kT0 + kDay, 14).empty());
  combined.cert_file = cert;  // ... and without one
  auto no_key = lint_tls_files({combined}, kT0 + kDay, 14);
  REQUIRE(no_key.size() == 1);
  CHECK(no_key[0].message.find("no private key for the etcd client certificate") == 0);

  // Through config_lint: the worst certificate finding decides, the file is named.
  Config cfg;
  ConfigLintInputs in;
  in.tls = expired;
  in.tls_checked = {cert};
  auto r = evaluate_config_lint(cfg, in);
  CHECK(r.status == Status::critical);
  CHECK(r.message.find(cert + ": etcd client certificate (/CN=fener; from fener.yaml etcd) "
                              "expired on") == 0);
}

TEST_CASE("tls: a check that cannot talk TLS reports unknown with the TLS message") {
  HttpResult r;
  r.error = HttpError::tls;
  r.error_text =
      "TLS: server certificate not trusted (CA /etc/etcd/pki/ca.pem): unable to get "
      "local issuer certificate";
  // etcd: a member that cannot be checked; with none checked, quorum is unknown, not lost.
  auto m = classify_etcd_health("https://10.0.0.1:2379", r, {});
  CHECK(m.state == EtcdMemberState::unreachable);
  CHECK(m.reason == r.error_text);
  auto h = judge_etcd_health({m});
  CHECK(h.status == Status::unknown);
  CHECK(h.message.find(r.error_text) != std::string::npos);
  // Patroni: unknown, never the "refused" that would start a remedy.
  PatroniNodeParams p;
  p.url = "https://10.0.0.2:8008";
  auto n = evaluate_patroni_node(r, std::nullopt, p);
  CHECK(n.status == Status::unknown);
  CHECK(n.message == "Patroni REST API at https://10.0.0.2:8008/patroni: " + r.error_text);
}
