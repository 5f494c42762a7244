// Calls to Patroni's unsafe REST endpoints (POST with the Basic auth from patroni.yml),
// shared by the Patroni remedies.
#pragma once

#include <string>

#include <boost/asio/awaitable.hpp>

#include "src/cluster_http.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"

namespace fener {

inline asio::awaitable<HttpResult> patroni_post(HttpClient& http, const Config& config,
                                                const std::string& path, std::string body,
                                                Duration timeout) {
  HttpRequest req = patroni_request(config, config.patroni_url + path, timeout);
  req.method = "POST";
  req.body = std::move(body);
  req.headers = {"Content-Type: application/json"};
  req.username = config.patroni_username;
  req.password = config.patroni_password;
  req.max_body = 64 * 1024;
  co_return co_await http.fetch(std::move(req));
}

// "HTTP 503: I am the leader, can not reinitialize" or the transport error, one line.
inline std::string describe_answer(const HttpResult& r) {
  if (!r.ok()) return r.describe();
  return "HTTP " + std::to_string(r.status) + ": " + snippet(r.body, 160);
}

}  // namespace fener
