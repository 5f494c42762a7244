// HttpClient against in-process peers on 127.0.0.1: well-behaved, silent, oversized,
// refusing. Everything runs on one io_context, as in the daemon.
#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "src/http_client.hpp"

using namespace fener;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

// barrier3: answers nobody until three requests are waiting, then everyone.
enum class Peer { ok, silent, huge, reset, barrier3 };

// A tiny HTTP peer: reads the request head, then behaves as told.
struct TestServer {
  TestServer(asio::io_context& io, Peer b)
      : acceptor(io, {asio::ip::make_address("127.0.0.1"), 0}), behaviour(b) {
    asio::co_spawn(io, accept_loop(), asio::detached);
  }
  std::string url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + path;
  }
  asio::awaitable<void> accept_loop() {
    for (;;) {
      tcp::socket accepted_socket = co_await acceptor.async_accept(asio::use_awaitable);
      auto sock = std::make_shared<tcp::socket>(std::move(accepted_socket));
      ++accepted;
      held.push_back(sock);
      asio::co_spawn(acceptor.get_executor(), serve(sock), asio::detached);
    }
  }
  asio::awaitable<void> serve(std::shared_ptr<tcp::socket> s) {
    asio::streambuf buf;
    co_await asio::async_read_until(*s, buf, "\r\n\r\n", asio::use_awaitable);
    std::istream in(&buf);
    std::getline(in, last_request_line);
    if (behaviour == Peer::silent) co_return;  // held open, never answered
    if (behaviour == Peer::barrier3) {
      waiting.push_back(s);
      if (waiting.size() < 3) co_return;
      const std::string body = "{\"ok\":true}";
      for (auto& w : waiting) co_await answer(*w, body);
      co_return;
    }
    if (behaviour == Peer::reset) {
      s->set_option(asio::socket_base::linger(true, 0));
      s->close();
      co_return;
    }
    // A named body: GCC 12 destroys temporaries inside co_await twice.
    const std::string body = behaviour == Peer::huge ? std::string(3 << 20, 'x') : "{\"ok\":true}";
    co_await answer(*s, body);
  }
  asio::awaitable<void> answer(tcp::socket& s, const std::string& body) {
    const std::string resp =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    co_await asio::async_write(s, asio::buffer(resp), asio::use_awaitable);
    s.shutdown(tcp::socket::shutdown_both);
  }
  tcp::acceptor acceptor;
  Peer behaviour;
  int accepted = 0;
  std::string last_request_line;
  std::vector<std::shared_ptr<tcp::socket>> held, waiting;
};

template <class F>
void run(asio::io_context& io, F f) {
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await f();
        done = true;
        io.stop();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  REQUIRE(done);
}

}  // namespace

TEST_CASE("fetch returns status and body from a well-behaved peer") {
  asio::io_context io;
  TestServer srv(io, Peer::ok);
  HttpClient http(io);
  HttpResult r;
  run(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = srv.url("/health")};
    r = co_await http.fetch(std::move(req));
  });
  CHECK(r.ok());
  CHECK(r.status == 200);
  CHECK(r.body == "{\"ok\":true}");
  CHECK(srv.last_request_line.rfind("GET /health HTTP/1.1", 0) == 0);
  CHECK(http.in_flight() == 0);
  CHECK(r.header("Content-Type") == "application/json");
  CHECK(r.header("content-length") == "11");
  CHECK_FALSE(r.header("x-missing").has_value());
  REQUIRE(!r.headers.empty());
  CHECK(r.headers.front().first == "content-type");
}

TEST_CASE("a closed port is a definite refusal") {
  asio::io_context io;
  unsigned short port;
  {
    tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  HttpClient http(io);
  HttpResult r;
  run(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = "http://127.0.0.1:" + std::to_string(port) + "/"};
    r = co_await http.fetch(std::move(req));
  });
  CHECK(r.error == HttpError::refused);
  CHECK(r.describe() == "connection refused");
}

TEST_CASE("a peer that accepts and never answers costs the timeout") {
  asio::io_context io;
  TestServer srv(io, Peer::silent);
  HttpClient http(io);
  HttpResult r;
  run(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = srv.url(), .timeout = std::chrono::milliseconds(300)};
    r = co_await http.fetch(std::move(req));
  });
  CHECK(r.error == HttpError::timeout);
  CHECK(r.elapsed >= std::chrono::milliseconds(290));
  CHECK(srv.accepted == 1);
}

TEST_CASE("a body over the cap fails as too_large and keeps nothing") {
  asio::io_context io;
  TestServer srv(io, Peer::huge);
  HttpClient http(io);
  HttpResult r;
  run(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = srv.url(), .max_body = 64 * 1024};
    r = co_await http.fetch(std::move(req));
  });
  CHECK(r.error == HttpError::too_large);
  CHECK(r.body.empty());
}

TEST_CASE("a connection reset is an error, not a crash") {
  asio::io_context io;
  TestServer srv(io, Peer::reset);
  HttpClient http(io);
  HttpResult r;
  run(io, [&]() -> asio::awaitable<void> {
    HttpRequest req{.url = srv.url()};
    r = co_await http.fetch(std::move(req));
  });
  CHECK_FALSE(r.ok());
  CHECK(r.error != HttpError::timeout);
}

TEST_CASE("cancellation aborts a transfer at once") {
  asio::io_context io;
  TestServer srv(io, Peer::silent);
  HttpClient http(io);
  std::variant<HttpResult, std::monostate> out;
  run(io, [&]() -> asio::awaitable<void> {
    asio::steady_timer t(io, std::chrono::milliseconds(50));
    HttpRequest req{.url = srv.url(), .timeout = std::chrono::seconds(30)};
    out = co_await (http.fetch(std::move(req)) || t.async_wait(asio::use_awaitable));
  });
  CHECK(out.index() == 1);  // the timer won; the 30 s transfer did not hold us
  CHECK(http.in_flight() == 0);
}

TEST_CASE("fetch_all runs requests concurrently and keeps their order") {
  asio::io_context io;
  TestServer barrier(io, Peer::barrier3);
  TestServer silent(io, Peer::silent);
  HttpClient http(io);
  std::vector<HttpResult> rs;
  run(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs;
    // Done one after another, each would time out waiting for the other two.
    for (int i = 0; i < 3; ++i)
      reqs.push_back({.url = barrier.url(), .timeout = std::chrono::seconds(5)});
    reqs.push_back({.url = silent.url(), .timeout = std::chrono::milliseconds(200)});
    rs = co_await fetch_all(http, std::move(reqs));
  });
  REQUIRE(rs.size() == 4);
  for (int i = 0; i < 3; ++i) CHECK(rs[i].ok());
  CHECK(rs[3].error == HttpError::timeout);
}

TEST_CASE("parse_json and snippet never throw on garbage") {
  CHECK_FALSE(parse_json("{not json").has_value());
  CHECK_FALSE(parse_json("").has_value());
  CHECK(parse_json("[1,2]")->is_array());
  CHECK(snippet(std::string("a\nb\x01", 4)) == "a b ");
  CHECK(snippet(std::string(100, 'x'), 10) == std::string(10, 'x') + "...");
  CHECK(snippet("caf\xc3\xa9", 4) == "caf?...");  // never half a UTF-8 character
}
