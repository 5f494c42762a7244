// ApiServer on 127.0.0.1 with a free port, asked by HttpClient and by a raw TCP client.
#include "src/api_server.hpp"

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include "src/http_client.hpp"
#include "src/sha256.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using json = nlohmann::json;
using fener::test::local_options;
using fener::test::raw_exchange;
using fener::test::RawReply;
using fener::test::run_co;

namespace {

const std::string kToken = "0123456789abcdef-secret";

asio::awaitable<ApiResponse> hello(const ApiRequest& req) {
  co_return ApiResponse::json_body(
      200, {{"path", req.path}, {"query", req.query}, {"body_size", req.body.size()}});
}

// A handler that would take ten seconds.
asio::awaitable<ApiResponse> slow(const ApiRequest&) {
  asio::steady_timer t(co_await asio::this_coro::executor, 10s);
  co_await t.async_wait(asio::use_awaitable);
  co_return ApiResponse::json_body(200, {{"late", true}});
}

void add_routes(ApiServer& s) {
  s.add_route("GET", "/hello", false, false, hello);
  s.add_route("POST", "/hello", false, false, hello);
  s.add_route("GET", "/files/", true, false, hello);
  s.add_route("GET", "/secret", false, true, hello);
  s.add_route("GET", "/slow", false, false, slow);
}

std::string url(const ApiServer& s, const std::string& target) {
  return "http://127.0.0.1:" + std::to_string(s.port()) + target;
}

json body_of(const HttpResult& r) {
  auto j = parse_json(r.body);
  REQUIRE_MESSAGE(j.has_value(), r.body);
  return *j;
}

std::string error_of(const HttpResult& r) {
  return body_of(r).value("error", std::string("<no error>"));
}

}  // namespace

TEST_CASE("decode_request_path decodes and refuses NUL, %2F and broken escapes") {
  CHECK(decode_request_path("/a%2Eb%20c") == "/a.b c");
  CHECK(decode_request_path("/plain/path") == "/plain/path");
  std::string why;
  CHECK_FALSE(decode_request_path("/a%2Fb", &why));
  CHECK(why.find("encoded separator") != std::string::npos);
  CHECK_FALSE(decode_request_path("/a%2fb", &why));
  CHECK_FALSE(decode_request_path("/a%00b", &why));
  CHECK(why.find("NUL") != std::string::npos);
  CHECK_FALSE(decode_request_path("/a%4", &why));
  CHECK_FALSE(decode_request_path("/a%zz", &why));
  CHECK(why.find("malformed") != std::string::npos);
}

TEST_CASE("bearer_token_matches wants the exact token after Bearer") {
  CHECK(bearer_token_matches("Bearer " + kToken, kToken));
  CHECK(bearer_token_matches("bearer  " + kToken + " ", kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + kToken + "x", kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + kToken.substr(1), kToken));
  CHECK_FALSE(bearer_token_matches("Basic " + kToken, kToken));
  CHECK_FALSE(bearer_token_matches(kToken, kToken));
  CHECK_FALSE(bearer_token_matches("Bearer ", ""));
}

TEST_CASE("routes: exact, prefix, 404, 405, and X-Fener-Node on every answer") {
  asio::io_context io;
  ApiServer server(io, local_options());
  add_routes(server);
  server.start();
  REQUIRE(server.port() != 0);
  HttpClient http(io);
  std::vector<HttpResult> r;
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs = {
        {.url = url(server, "/hello?x=1")},
        {.url = url(server, "/files/a%20b")},
        {.url = url(server, "/nothing")},
        {.method = "DELETE", .url = url(server, "/hello")},
    };
    r = co_await fetch_all(http, std::move(reqs));
  });
  REQUIRE(r.size() == 4);
  CHECK(r[0].status == 200);
  CHECK(body_of(r[0])["path"] == "/hello");
  CHECK(body_of(r[0])["query"] == "x=1");
  CHECK(r[0].header("content-type") == "application/json");
  CHECK(r[1].status == 200);
  CHECK(body_of(r[1])["path"] == "/files/a b");
  CHECK(r[2].status == 404);
  CHECK(error_of(r[2]).find("/nothing") != std::string::npos);
  CHECK(r[3].status == 405);
  CHECK(r[3].header("allow").value_or("").find("GET") != std::string::npos);
  for (const auto& x : r) CHECK(x.header("x-fener-node") == "kaptan1");
}

TEST_CASE("token routes: 401 without or with a wrong token, 200 with it") {
  asio::io_context io;
  ApiServer server(io, local_options(kToken));
  add_routes(server);
  server.start();
  HttpClient http(io);
  std::vector<HttpResult> r;
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs = {
        {.url = url(server, "/secret")},
        {.url = url(server, "/secret"), .headers = {"Authorization: Bearer wrong-token-123456"}},
        {.url = url(server, "/secret"), .headers = {"Authorization: Bearer " + kToken}},
        {.url = url(server, "/hello")},
    };
    r = co_await fetch_all(http, std::move(reqs));
  });
  CHECK(r[0].status == 401);
  CHECK(error_of(r[0]).find("missing") != std::string::npos);
  CHECK(r[1].status == 401);
  CHECK(error_of(r[1]) == "wrong token");
  CHECK(r[2].status == 200);
  CHECK(r[3].status == 200);  // open routes need no token
  CHECK(r[0].header("x-fener-node") == "kaptan1");
}

TEST_CASE("token routes answer 403 when the node has no token configured") {
  asio::io_context io;
  ApiServer server(io, local_options(""));
  add_routes(server);
  server.start();
  HttpClient http(io);
  HttpResult r;
  run_co(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = url(server, "/secret"), .headers = {"Authorization: Bearer x"}};
    r = co_await http.fetch(std::move(req));
  });
  CHECK(r.status == 403);
  CHECK(error_of(r) == "peer endpoints are disabled: no api.token configured");
}

TEST_CASE("oversized bodies and headers are refused with 413 and 431") {
  asio::io_context io;
  ApiServer server(io, local_options());
  add_routes(server);
  server.start();
  HttpClient http(io);
  std::vector<HttpResult> r;
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs = {
        {.method = "POST", .url = url(server, "/hello"), .body = std::string(100 * 1024, 'x')},
        {.method = "POST", .url = url(server, "/hello"), .body = std::string(1000, 'x')},
        {.url = url(server, "/hello"), .headers = {"X-Big: " + std::string(9000, 'y')}},
    };
    r = co_await fetch_all(http, std::move(reqs));
  });
  CHECK(r[0].status == 413);
  CHECK(error_of(r[0]).find("body larger than") != std::string::npos);
  CHECK(r[1].status == 200);
  CHECK(body_of(r[1])["body_size"] == 1000);
  CHECK(r[2].status == 431);
}

TEST_CASE("raw targets: %2F, %00 and non-origin targets are 400; keep-alive serves twice") {
  asio::io_context io;
  ApiServer server(io, local_options());
  add_routes(server);
  server.start();
  RawReply slash, nul, absolute, twice;
  run_co(io, [&]() -> asio::awaitable<void> {
    const auto port = server.port();
    std::string a = "GET /files/a%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    slash = co_await raw_exchange(port, std::move(a), 2s);
    std::string b = "GET /files/a%00b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    nul = co_await raw_exchange(port, std::move(b), 2s);
    std::string c = "GET http://x/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    absolute = co_await raw_exchange(port, std::move(c), 2s);
    std::string d =
        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /files/z HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n";
    twice = co_await raw_exchange(port, std::move(d), 2s);
  });
  CHECK(slash.bytes.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(slash.bytes.find("encoded separator") != std::string::npos);
  CHECK(slash.bytes.find("X-Fener-Node: kaptan1") != std::string::npos);
  CHECK(nul.bytes.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(absolute.bytes.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(twice.bytes.find("\"path\":\"/hello\"") != std::string::npos);
  CHECK(twice.bytes.find("\"path\":\"/files/z\"") != std::string::npos);
  CHECK(twice.closed);
}

TEST_CASE("a silent client is closed at the deadline while another is served") {
  asio::io_context io;
  auto opts = local_options();
  opts.deadline = 300ms;
  ApiServer server(io, opts);
  add_routes(server);
  server.start();
  HttpClient http(io);
  RawReply silent;
  HttpResult served;
  std::chrono::milliseconds served_after{0};
  run_co(io, [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    const auto port = server.port();
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          // Starts while the silent client is connected and waiting.
          asio::steady_timer t(ex, 50ms);
          co_await t.async_wait(asio::use_awaitable);
          const auto start = std::chrono::steady_clock::now();
          HttpRequest req{.url = url(server, "/hello")};
          served = co_await http.fetch(std::move(req));
          served_after = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - start);
        },
        asio::detached);
    std::string nothing;
    silent = co_await raw_exchange(port, std::move(nothing), 3s);
  });
  CHECK(silent.closed);
  CHECK(silent.bytes.empty());
  CHECK(silent.elapsed >= 250ms);
  CHECK(silent.elapsed < 2s);
  CHECK(served.status == 200);
  CHECK(served_after < 250ms);
}

TEST_CASE("a handler that overruns the deadline is cancelled and the connection closed") {
  asio::io_context io;
  auto opts = local_options();
  opts.deadline = 300ms;
  ApiServer server(io, opts);
  add_routes(server);
  server.start();
  HttpClient http(io);
  HttpResult r;
  run_co(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = url(server, "/slow"), .timeout = 5000ms};
    r = co_await http.fetch(std::move(req));
  });
  CHECK_FALSE(r.ok());
  CHECK(r.elapsed < 2s);
}

TEST_CASE("connections over max_connections are closed at once") {
  asio::io_context io;
  auto opts = local_options();
  opts.max_connections = 2;
  opts.deadline = 1500ms;
  ApiServer server(io, opts);
  add_routes(server);
  server.start();
  RawReply third;
  std::size_t held = 0;
  run_co(io, [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    const auto port = server.port();
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(
          ex,
          [port]() -> asio::awaitable<void> {
            std::string nothing;
            co_await raw_exchange(port, std::move(nothing), 3s);
          },
          asio::detached);
    }
    asio::steady_timer t(ex, 150ms);
    co_await t.async_wait(asio::use_awaitable);
    held = server.connections();
    std::string req = "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    third = co_await raw_exchange(port, std::move(req), 3s);
  });
  CHECK(held == 2);
  CHECK(third.closed);
  CHECK(third.bytes.empty());
  CHECK(third.elapsed < 1s);
}

TEST_CASE("stop closes the listener and open connections") {
  asio::io_context io;
  auto opts = local_options();
  opts.deadline = 5s;
  ApiServer server(io, opts);
  add_routes(server);
  server.start();
  RawReply held;
  HttpResult after;
  HttpClient http(io);
  run_co(io, [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer t(ex, 150ms);
          co_await t.async_wait(asio::use_awaitable);
          server.stop();
        },
        asio::detached);
    std::string nothing;
    held = co_await raw_exchange(server.port(), std::move(nothing), 3s);
    HttpRequest req{.url = url(server, "/hello"), .timeout = 1000ms};
    after = co_await http.fetch(std::move(req));
  });
  CHECK(held.closed);
  CHECK(held.elapsed < 1s);
  CHECK(after.error == HttpError::refused);
}

TEST_CASE("start refuses a malformed listen address") {
  asio::io_context io;
  auto opts = local_options();
  opts.listen = "not-an-address";
  ApiServer server(io, opts);
  CHECK_THROWS_AS(server.start(), std::invalid_argument);
}

TEST_CASE("the token comparison: equal, unequal, different lengths") {
  // Correctness only. That it takes the same time whatever the input is by construction
  // (both sides hashed to 32 bytes, compared with CRYPTO_memcmp, which has no early exit);
  // a timing assertion would measure this machine's noise, not the code.
  CHECK(digests_equal(sha256("abc"), sha256("abc")));
  CHECK_FALSE(digests_equal(sha256("abc"), sha256("abd")));
  CHECK_FALSE(digests_equal(sha256("abc"), sha256("abcd")));
  CHECK_FALSE(digests_equal(sha256(""), sha256("a")));
  CHECK(bearer_token_matches("Bearer " + kToken, kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + kToken + kToken, kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + std::string(100000, 'a'), kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + kToken.substr(0, kToken.size() - 1) + "X", kToken));
  CHECK_FALSE(bearer_token_matches("Bearer", kToken));
  CHECK_FALSE(bearer_token_matches("", kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + std::string(kToken.c_str(), 5), kToken));
  CHECK_FALSE(bearer_token_matches("Bearer " + kToken, ""));  // no token configured: never
}

TEST_CASE("token routes: every wrong, missing, empty, long or misplaced token is 401") {
  asio::io_context io;
  ApiServer server(io, local_options(kToken));
  add_routes(server);
  server.start();
  HttpClient http(io);
  std::vector<HttpResult> r;
  RawReply twice;
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs = {
        {.url = url(server, "/secret")},
        {.url = url(server, "/secret"), .headers = {"Authorization: Bearer "}},
        {.url = url(server, "/secret"), .headers = {"Authorization:"}},
        {.url = url(server, "/secret"), .headers = {"Authorization: Bearer " + kToken + "x"}},
        {.url = url(server, "/secret"), .headers = {"Authorization: " + kToken}},
        {.url = url(server, "/secret"), .headers = {"Authorization: Basic " + kToken}},
        {.url = url(server, "/secret"),
         .headers = {"Authorization: Bearer " + std::string(6000, 'k')}},
        {.url = url(server, "/secret?token=" + kToken)},
        {.url = url(server, "/secret?access_token=" + kToken)},
        {.url = url(server, "/secret"), .headers = {"X-Fener-Token: " + kToken}},
        {.url = url(server, "/secret"), .headers = {"Cookie: token=" + kToken}},
        {.url = url(server, "/secret"), .headers = {"authorization: bearer " + kToken}},
    };
    r = co_await fetch_all(http, std::move(reqs));
    // Two Authorization headers: the first one is judged.
    std::string two =
        "GET /secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
        "Authorization: Bearer " +
        kToken + "\r\nConnection: close\r\n\r\n";
    twice = co_await raw_exchange(server.port(), std::move(two), 2s);
  });
  REQUIRE(r.size() == 12);
  for (std::size_t i = 0; i + 1 < r.size(); ++i) {
    INFO("request ", i);
    CHECK(r[i].status == 401);
    CHECK(r[i].header("www-authenticate") == "Bearer");
    CHECK(r[i].body.find(kToken) == std::string::npos);  // never echoed
  }
  CHECK(r[11].status == 200);  // the control: header name and scheme in any case
  CHECK(twice.bytes.rfind("HTTP/1.1 401", 0) == 0);
}

TEST_CASE("request line and headers are bounded: 4xx or closed, the server goes on") {
  asio::io_context io;
  ApiServer server(io, local_options());
  add_routes(server);
  server.start();
  RawReply long_path, many, huge, garbage, after;
  run_co(
      io,
      [&]() -> asio::awaitable<void> {
        const auto port = server.port();
        std::string a = "GET /hello/" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n";
        long_path = co_await raw_exchange(port, std::move(a), 3s);
        std::string b = "GET /hello HTTP/1.1\r\nHost: x\r\n";
        for (int i = 0; i < 2000; ++i) b += "X-H" + std::to_string(i) + ": v\r\n";
        b += "\r\n";
        many = co_await raw_exchange(port, std::move(b), 3s);
        std::string c =
            "GET /hello HTTP/1.1\r\nHost: x\r\nX-Huge: " + std::string(1 << 20, 'h') + "\r\n\r\n";
        huge = co_await raw_exchange(port, std::move(c), 3s);
        std::string d = std::string(5000, '\x01') + "\r\n\r\n";
        garbage = co_await raw_exchange(port, std::move(d), 3s);
        std::string e = "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        after = co_await raw_exchange(port, std::move(e), 3s);
      },
      30s);
  auto refused = [](const RawReply& x) {
    return x.bytes.rfind("HTTP/1.1 4", 0) == 0 || (x.bytes.empty() && x.closed);
  };
  CHECK(refused(long_path));
  CHECK(long_path.bytes.rfind("HTTP/1.1 431", 0) == 0);
  CHECK(refused(many));
  CHECK(many.bytes.rfind("HTTP/1.1 431", 0) == 0);
  CHECK(refused(huge));
  CHECK(refused(garbage));
  MESSAGE("long path ", long_path.elapsed.count(), " ms, 2000 headers ", many.elapsed.count(),
          " ms, 1 MiB header ", huge.elapsed.count(), " ms, garbage ", garbage.elapsed.count(),
          " ms");
  CHECK(after.bytes.rfind("HTTP/1.1 200", 0) == 0);  // still serving
}
