// Asynchronous HTTP client: libcurl's multi interface driven by the Asio event loop.
// No thread per request; every request has a deadline and a cap on the body it keeps.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "src/tls.hpp"

namespace fener {

namespace asio = boost::asio;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::string body;                  // sent when non-empty or method is POST/PUT
  std::vector<std::string> headers;  // "Name: value"
  std::string username;              // HTTP Basic auth when non-empty
  std::string password;
  std::chrono::milliseconds timeout{3000};  // whole request, connect included
  std::size_t max_body = 1 << 20;           // larger bodies fail with too_large
  TlsSettings tls;                          // for https URLs; see etcd_request/patroni_request
};

enum class HttpError {
  none,
  refused,    // nothing listens there (a definite answer)
  timeout,    // no complete answer within the deadline
  too_large,  // body over max_body
  resolve,    // name did not resolve
  cancelled,  // the caller gave up (e.g. the scheduler's deadline)
  tls,        // the TLS handshake failed: untrusted, expired or rejected certificate, ...
  other,      // any other transport failure; see error_text
};

struct HttpResult {
  HttpError error = HttpError::none;
  std::string error_text;  // curl's words, for messages (operator words for tls)
  long status = 0;         // HTTP status when error == none
  std::string body;
  // Response headers in arrival order, names lowercased, values trimmed (the final
  // response's only, when curl saw interim ones).
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds elapsed{0};

  bool ok() const { return error == HttpError::none; }
  // "connection refused", "timed out after 3000 ms", ... for one-line messages.
  std::string describe() const;
  // The first header of that name (any case), nullopt when absent.
  std::optional<std::string> header(std::string_view name) const;
};

std::string_view to_string(HttpError e);

// Operator words ("TLS: server certificate not trusted (CA /etc/x/ca.pem)") for a transfer
// that failed with libcurl code curl_code and error text curl_text; nullopt when the failure
// is not about TLS. Pure: unit-tested without a network.
std::optional<std::string> tls_failure_message(int curl_code, const std::string& curl_text,
                                               const TlsSettings& tls);

class HttpClient {
 public:
  explicit HttpClient(asio::io_context& io);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Never throws for transport failures: they come back in HttpResult::error.
  // Cancellation (e.g. from an awaitable || timer) aborts the transfer at once.
  asio::awaitable<HttpResult> fetch(HttpRequest req);

  // Requests in flight; for tests and metrics.
  std::size_t in_flight() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Runs every request concurrently and returns the results in the order given.
asio::awaitable<std::vector<HttpResult>> fetch_all(HttpClient& http, std::vector<HttpRequest> reqs);

// Parses a JSON body; nullopt when it is not JSON (callers report the first bytes).
std::optional<nlohmann::json> parse_json(const std::string& body);
// At most n bytes of text, control characters replaced, for one-line messages.
std::string snippet(const std::string& body, std::size_t n = 80);

}  // namespace fener
