#include "src/api_server.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <stdexcept>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "src/sha256.hpp"

namespace fener {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

std::string to_std(beast::string_view s) {
  return std::string(s.data(), s.size());
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A header value a handler gave us goes on the wire only when it cannot split the header.
bool safe_header_text(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) { return c == '\r' || c == '\n' || c == 0; });
}

struct Route {
  std::string method;
  std::string path;
  bool prefix = false;
  bool needs_token = false;
  ApiHandler handler;

  bool matches(const std::string& p) const {
    return prefix ? p.compare(0, path.size(), path) == 0 : p == path;
  }
};

// One accepted connection. The watchdog closes the socket when a request overruns the
// deadline, which ends whatever read or write is pending on it.
struct Connection {
  Connection(tcp::socket s, std::uint64_t i)
      : socket(std::move(s)), timer(socket.get_executor()), id(i) {}
  void close() {
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    timer.cancel();
  }
  tcp::socket socket;
  asio::steady_timer timer;
  std::uint64_t id;
};

std::string remote_of(const tcp::socket& s) {
  boost::system::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  if (ec) return "?";
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

// The answer to a request the parser refused.
ApiResponse refusal_for(const boost::system::error_code& ec, const ApiServerOptions& opts) {
  if (ec == http::error::header_limit)
    return ApiResponse::error(
        431, "request header larger than " + std::to_string(opts.max_header_bytes) + " bytes");
  if (ec == http::error::body_limit)
    return ApiResponse::error(
        413, "request body larger than " + std::to_string(opts.max_body_bytes) + " bytes");
  return ApiResponse::error(400, "malformed request: " + ec.message());
}

ApiRequest request_from(http::request<http::string_body>& msg) {
  ApiRequest req;
  req.method = to_std(msg.method_string());
  req.target = to_std(msg.target());
  for (const auto& f : msg) {
    std::string name = to_std(f.name_string());
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    req.headers.emplace_back(std::move(name), to_std(f.value()));
  }
  req.body = std::move(msg.body());
  return req;
}

}  // namespace

std::variant<ApiRequest, ApiResponse> parse_api_request(std::string_view bytes,
                                                        const ApiServerOptions& opts) {
  // Beast takes an end of stream before the first byte as a clean close, not an error.
  if (bytes.empty()) return refusal_for(http::error::partial_message, opts);
  http::request_parser<http::string_body> parser;
  parser.eager(true);
  parser.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
  parser.body_limit(opts.max_body_bytes);
  boost::system::error_code ec;
  std::size_t used = 0;
  while (!ec && !parser.is_done() && used < bytes.size()) {
    const std::size_t n = parser.put(asio::buffer(bytes.data() + used, bytes.size() - used), ec);
    if (ec == http::error::need_more) {
      ec = {};
      break;
    }
    if (n == 0) break;
    used += n;
  }
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (!ec && !parser.is_done()) ec = http::error::partial_message;
  if (ec) return refusal_for(ec, opts);
  return request_from(parser.get());
}

asio::ip::tcp::endpoint parse_listen(const std::string& listen) {
  std::string host, port;
  if (!listen.empty() && listen.front() == '[') {
    const auto close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':')
      throw std::invalid_argument("expected [address]:port, got \"" + listen + "\"");
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos || listen.find(':') != colon)
      throw std::invalid_argument("expected address:port, got \"" + listen + "\"");
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  if (host == "localhost") host = "127.0.0.1";
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535)
    throw std::invalid_argument("expected a port number in \"" + listen + "\"");
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) throw std::invalid_argument("expected an IP address in \"" + listen + "\"");
  return {addr, static_cast<unsigned short>(std::stoi(port))};
}

std::optional<std::string> ApiRequest::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (iequals(n, name)) return v;
  return std::nullopt;
}

ApiResponse ApiResponse::json_body(int status, const nlohmann::json& body) {
  ApiResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

ApiResponse ApiResponse::error(int status, std::string message) {
  return json_body(status, nlohmann::json{{"error", std::move(message)}});
}

std::optional<std::string> decode_request_path(std::string_view raw, std::string* why) {
  auto fail = [&](const char* reason) -> std::optional<std::string> {
    if (why) *why = reason;
    return std::nullopt;
  };
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      out.push_back(raw[i]);
      continue;
    }
    if (i + 2 >= raw.size()) return fail("malformed percent-encoding in path");
    const int hi = hex_value(raw[i + 1]);
    const int lo = hex_value(raw[i + 2]);
    if (hi < 0 || lo < 0) return fail("malformed percent-encoding in path");
    const int c = hi * 16 + lo;
    if (c == 0) return fail("NUL (%00) in path");
    if (c == '/') return fail("encoded separator (%2F) in path");
    out.push_back(static_cast<char>(c));
    i += 2;
  }
  return out;
}

bool bearer_token_matches(std::string_view value, std::string_view token) {
  if (token.empty()) return false;
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme))
    return false;
  value.remove_prefix(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  // Equal-length digests: the comparison time says nothing about the token either.
  return digests_equal(sha256(value), sha256(token));
}

struct ApiServer::Impl : std::enable_shared_from_this<ApiServer::Impl> {
  Impl(asio::io_context& ctx, ApiServerOptions o) : io(ctx), opts(std::move(o)) {}

  asio::io_context& io;
  ApiServerOptions opts;
  std::vector<Route> routes;
  std::optional<tcp::acceptor> acceptor;
  std::map<std::uint64_t, std::weak_ptr<Connection>> conns;
  std::uint64_t next_id = 1;
  unsigned short bound_port = 0;
  bool started = false;
  bool stopped = false;

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
    for (;;) {
      if (self->stopped || !self->acceptor) co_return;
      tcp::socket socket(self->io);
      boost::system::error_code ec;
      co_await self->acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
      if (self->stopped) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) co_return;
        // Out of descriptors and the like: pause rather than spin, then accept again.
        asio::steady_timer pause(self->io, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      if (self->conns.size() >= self->opts.max_connections) {
        boost::system::error_code ignored;
        socket.close(ignored);  // over the cap: closed at once, nothing read or written
        continue;
      }
      auto conn = std::make_shared<Connection>(std::move(socket), self->next_id++);
      self->conns.emplace(conn->id, conn);
      asio::co_spawn(self->io, serve(self, conn), asio::detached);
    }
  }

  void arm_watchdog(const std::shared_ptr<Connection>& c) {
    c->timer.expires_after(opts.deadline);
    c->timer.async_wait([weak = std::weak_ptr<Connection>(c)](boost::system::error_code ec) {
      if (ec) return;  // re-armed or cancelled
      if (auto conn = weak.lock()) conn->close();
    });
  }

  static asio::awaitable<void> serve(std::shared_ptr<Impl> self, std::shared_ptr<Connection> c) {
    try {
      co_await self->serve_requests(c);
    } catch (const std::exception&) {
      // A connection's failure is its own; the server goes on.
    }
    c->close();
    self->conns.erase(c->id);
  }

  asio::awaitable<void> serve_requests(const std::shared_ptr<Connection>& conn) {
    Connection& c = *conn;
    beast::flat_buffer buffer(opts.max_header_bytes + opts.max_body_bytes + 4096);
    const std::string remote = remote_of(c.socket);
    for (;;) {
      if (stopped) co_return;
      arm_watchdog(conn);
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
      parser.body_limit(opts.max_body_bytes);
      boost::system::error_code ec;
      co_await http::async_read(c.socket, buffer, parser,
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
          ec == asio::error::eof || ec == asio::error::connection_reset ||
          ec == asio::error::bad_descriptor || !c.socket.is_open())
        co_return;
      ApiResponse resp;
      bool keep_alive = false;
      unsigned version = 11;
      if (ec) {
        resp = refusal_for(ec, opts);
      } else {
        auto& msg = parser.get();
        version = msg.version();
        keep_alive = msg.keep_alive();
        ApiRequest req = request_from(msg);
        req.remote = remote;
        resp = co_await dispatch(c.timer, req);
      }
      co_await write_response(c, resp, version, keep_alive);
      // After a refused request the client may still be sending: read and drop what comes
      // (until it closes or the deadline), so that closing with unread data does not reset
      // the connection before it has read the answer.
      if (ec) co_await drain(c);
      if (!keep_alive || !c.socket.is_open()) co_return;
    }
  }

  // Finds the route, checks the token, runs the handler (cancelled at the deadline).
  asio::awaitable<ApiResponse> dispatch(asio::steady_timer& deadline, ApiRequest& req) {
    const auto q = req.target.find('?');
    const std::string raw_path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    if (raw_path.empty() || raw_path.front() != '/')
      co_return ApiResponse::error(400, "expected a request target starting with '/'");
    std::string why;
    auto decoded = decode_request_path(raw_path, &why);
    if (!decoded) co_return ApiResponse::error(400, why);
    req.path = std::move(*decoded);

    const Route* best = nullptr;
    std::vector<std::string> allowed;
    for (const auto& r : routes) {
      if (!r.matches(req.path)) continue;
      if (r.method != req.method) {
        if (std::find(allowed.begin(), allowed.end(), r.method) == allowed.end())
          allowed.push_back(r.method);
        continue;
      }
      if (!best || r.path.size() > best->path.size()) best = &r;
    }
    if (!best && allowed.empty()) co_return ApiResponse::error(404, "no such path: " + req.path);
    if (!best) {
      ApiResponse r =
          ApiResponse::error(405, "method " + req.method + " not allowed on " + req.path);
      std::string allow;
      for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
      r.headers.emplace_back("Allow", allow);
      co_return r;
    }
    if (best->needs_token) {
      if (opts.token.empty())
        co_return ApiResponse::error(403, "peer endpoints are disabled: no api.token configured");
      auto auth = req.header("authorization");
      if (!auth || !bearer_token_matches(*auth, opts.token)) {
        ApiResponse r =
            ApiResponse::error(401, auth ? "wrong token" : "missing Authorization: Bearer token");
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        co_return r;
      }
    }
    // A copy: the table may change while this request waits.
    const ApiHandler handler = best->handler;
    auto outcome = co_await (run_handler(handler, req) || deadline.async_wait(asio::use_awaitable));
    if (outcome.index() == 0) co_return std::move(std::get<0>(outcome));
    co_return ApiResponse::error(503, "no answer within the deadline");
  }

  static asio::awaitable<ApiResponse> run_handler(const ApiHandler& handler,
                                                  const ApiRequest& req) {
    try {
      co_return co_await handler(req);
    } catch (const boost::system::system_error& e) {
      if (e.code() == asio::error::operation_aborted) throw;  // the deadline won
      co_return ApiResponse::error(500, std::string("internal error: ") + e.what());
    } catch (const std::exception& e) {
      co_return ApiResponse::error(500, std::string("internal error: ") + e.what());
    }
  }

  static asio::awaitable<void> drain(Connection& c) {
    std::array<char, 16384> scratch;
    std::size_t total = 0;
    while (c.socket.is_open() && total < (std::size_t{1} << 20)) {
      boost::system::error_code ec;
      const auto n = co_await c.socket.async_read_some(
          asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      total += n;
    }
  }

  asio::awaitable<void> write_response(Connection& c, ApiResponse& resp, unsigned version,
                                       bool keep_alive) {
    if (!c.socket.is_open()) co_return;
    http::response<http::string_body> res;
    res.version(version);
    res.result(static_cast<unsigned>(resp.status));
    if (!resp.content_type.empty() && safe_header_text(resp.content_type))
      res.set(http::field::content_type, resp.content_type);
    if (safe_header_text(opts.node_name)) res.set("X-Fener-Node", opts.node_name);
    res.set(http::field::cache_control, "no-store");
    for (const auto& [name, value] : resp.headers)
      if (!name.empty() && safe_header_text(name) && name.find(':') == std::string::npos &&
          safe_header_text(value))
        res.insert(name, value);
    res.keep_alive(keep_alive);
    res.body() = std::move(resp.body);
    res.prepare_payload();
    boost::system::error_code ec;
    co_await http::async_write(c.socket, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !keep_alive) {
      boost::system::error_code ignored;
      c.socket.shutdown(tcp::socket::shutdown_send, ignored);
    }
  }
};

ApiServer::ApiServer(asio::io_context& io, ApiServerOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(options))) {}

ApiServer::~ApiServer() {
  stop();
}

void ApiServer::add_route(std::string method, std::string path_or_prefix, bool prefix,
                          bool needs_token, ApiHandler handler) {
  impl_->routes.push_back(
      {std::move(method), std::move(path_or_prefix), prefix, needs_token, std::move(handler)});
}

tcp::acceptor bind_listener(asio::io_context& io, const std::string& listen) {
  const tcp::endpoint ep = parse_listen(listen);
  tcp::acceptor acceptor(io);
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(ep);
  acceptor.listen(asio::socket_base::max_listen_connections);
  return acceptor;
}

void ApiServer::start() {
  if (impl_->started) return;
  tcp::acceptor acceptor = bind_listener(impl_->io, impl_->opts.listen);
  impl_->bound_port = acceptor.local_endpoint().port();
  impl_->acceptor.emplace(std::move(acceptor));
  impl_->started = true;
  impl_->stopped = false;
  asio::co_spawn(impl_->io, Impl::accept_loop(impl_), asio::detached);
}

void ApiServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->acceptor) {
    boost::system::error_code ignored;
    impl_->acceptor->close(ignored);
  }
  for (auto& [id, weak] : impl_->conns)
    if (auto c = weak.lock()) c->close();
}

unsigned short ApiServer::port() const {
  return impl_->bound_port;
}

std::size_t ApiServer::connections() const {
  return impl_->conns.size();
}

asio::awaitable<ApiResponse> ApiServer::handle(ApiRequest req) {
  const std::shared_ptr<Impl> self = impl_;
  asio::steady_timer deadline(self->io, self->opts.deadline);
  ApiResponse resp = co_await self->dispatch(deadline, req);
  co_return resp;
}

const ApiServerOptions& ApiServer::options() const {
  return impl_->opts;
}

}  // namespace fener
