// TLS settings for the connections fener makes to etcd and Patroni, and the certificate
// files it keeps an eye on. Kept apart from config.hpp and http_client.hpp (both include
// it) so that neither drags in the other.
#pragma once

#include <string>
#include <vector>

namespace fener {

// How one kind of peer (etcd, Patroni) is reached over https. All empty: libcurl's
// defaults (the system CA store, no client certificate).
struct TlsSettings {
  std::string ca_file;      // PEM bundle that must have signed the server's certificate
  std::string cert_file;    // client certificate (PEM), "" for none
  std::string key_file;     // its private key, "" when it is in cert_file
  bool verify_peer = true;  // the server's chain must lead to ca_file (or the system store)
  bool verify_host = true;  // the server's certificate must name the host (or IP) asked for
  // Where each setting came from ("patroni.yml etcd.cacert", "fener.yaml etcd.cacert"), for
  // messages; parallel to the files above, "" when unset.
  std::string ca_source;
  std::string cert_source;
  std::string key_source;

  bool operator==(const TlsSettings&) const = default;
};

// One certificate (and perhaps its key and CA bundle) that fener or Patroni uses, for the
// certificate lint: readable, parsable, valid now, not expiring soon, key matching.
struct TlsFileSet {
  std::string what;       // "etcd client certificate", "Patroni REST API certificate", ...
  std::string cert_file;  // may be "" when only a CA bundle is configured
  std::string key_file;   // "" when the key is in cert_file or not configured
  std::string ca_file;    // "" when none
  std::string source;     // "fener.yaml etcd", "/etc/patroni.yml restapi", for messages
};

}  // namespace fener
