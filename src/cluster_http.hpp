// Requests to etcd and to Patroni's REST API: built here so that each carries the
// cluster's TLS settings (CA, client certificate and key, verification) from the Config.
// Every call site that talks to etcd or Patroni starts from one of these.
#pragma once

#include <string>
#include <utility>

#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/tls.hpp"

namespace fener {

inline HttpRequest tls_request(const TlsSettings& tls, std::string url, Duration timeout) {
  HttpRequest req;  // field by field: GCC 12 warns on partial designated initializers
  req.url = std::move(url);
  req.timeout = timeout;
  req.tls = tls;
  return req;
}

// GET url on an etcd member (a client URL plus a path).
inline HttpRequest etcd_request(const Config& config, std::string url, Duration timeout) {
  return tls_request(config.etcd_tls, std::move(url), timeout);
}

// GET url on a Patroni REST API (this node's or a peer's: they share the cluster's CA).
inline HttpRequest patroni_request(const Config& config, std::string url, Duration timeout) {
  return tls_request(config.patroni_tls, std::move(url), timeout);
}

}  // namespace fener
