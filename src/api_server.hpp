// fener's own HTTP/1.1 server (the peer file API now, /status and /metrics later). It runs
// on the daemon's single io_context, so nothing a client does may hold the loop: every
// request (reading it, answering it, writing the answer) has a deadline after which the
// connection is closed, sizes are capped, and connections over the cap are closed at once.
// Routes are a small table; token-protected routes compare a Bearer token in constant time.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

#include "src/yaml_reader.hpp"

namespace fener {

namespace asio = boost::asio;

struct ApiRequest {
  std::string method;  // "GET", as sent
  std::string target;  // the raw request target, "/v1/peer/files/x%2Ey?a=b"
  std::string path;    // the target's path, percent-decoded ("/v1/peer/files/x.y")
  std::string query;   // after '?', not decoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
  std::string remote;  // "127.0.0.1:40312"

  // The first header of that name (any case), nullopt when absent.
  std::optional<std::string> header(std::string_view name) const;
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static ApiResponse json_body(int status, const nlohmann::json& body);
  // {"error": message}: every refusal and failure looks the same to clients.
  static ApiResponse error(int status, std::string message);
};

using ApiHandler = std::function<asio::awaitable<ApiResponse>(const ApiRequest&)>;

struct ApiServerOptions {
  std::string listen;     // "host:port"; port 0 picks a free one (tests)
  std::string node_name;  // sent as X-Fener-Node on every response
  std::string token;      // Bearer token for needs_token routes; "" refuses them (403)
  std::size_t max_connections = 64;
  Duration deadline{5000};  // per request: read it, handle it, write the answer
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_body_bytes = 64 * 1024;
};

// Percent-decodes a request path. nullopt (with why) for malformed escapes, NUL and an
// encoded '/' (%2F): after decoding no one could tell it from a real separator.
std::optional<std::string> decode_request_path(std::string_view raw, std::string* why = nullptr);

// One request's bytes read the way the server reads them from its socket (Boost.Beast's
// parser with the same header and body limits): the request (path, query and remote not
// yet filled in), or the answer to a malformed one (400, 413, 431). Pure.
std::variant<ApiRequest, ApiResponse> parse_api_request(std::string_view bytes,
                                                        const ApiServerOptions& opts);

// "address:port" or "[v6]:port" ("localhost" = 127.0.0.1) as an endpoint to bind;
// std::invalid_argument with what is wrong otherwise.
asio::ip::tcp::endpoint parse_listen(const std::string& listen);

// A listening acceptor on `listen` (parse_listen's form), SO_REUSEADDR set. Throws
// boost::system::system_error when it cannot bind, std::invalid_argument for a bad address.
asio::ip::tcp::acceptor bind_listener(asio::io_context& io, const std::string& listen);

// True when header_value is "Bearer <token>" with exactly that token (constant time).
bool bearer_token_matches(std::string_view header_value, std::string_view token);

class ApiServer {
 public:
  ApiServer(asio::io_context& io, ApiServerOptions options);
  ~ApiServer();  // stop()s
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // A route answers `method` on `path_or_prefix` exactly, or on everything below it when
  // prefix (the longest matching route wins). An unknown path is 404; a known path with
  // another method is 405. Handlers run on the loop and must not block; their captures
  // must outlive the server's io_context work (stop() does not wait for them).
  void add_route(std::string method, std::string path_or_prefix, bool prefix, bool needs_token,
                 ApiHandler handler);

  // Binds and starts accepting. Throws boost::system::system_error when it cannot bind,
  // std::invalid_argument for a malformed listen address.
  void start();
  // Closes the acceptor and every connection. Coroutines still in flight finish on their
  // own (they keep the server's state alive); idempotent.
  void stop();

  // What the server answers to req, as if it had arrived on a connection: the route lookup,
  // path decoding, token check and handler, bounded by the deadline. Runs on the server's
  // io_context; for tests and fuzzing.
  asio::awaitable<ApiResponse> handle(ApiRequest req);

  unsigned short port() const;  // the bound port (after start)
  std::size_t connections() const;
  const ApiServerOptions& options() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fener
