// Test helpers shared by the unit tests that run a check against a peer on loopback.
#pragma once

#include <chrono>
#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "src/check.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

namespace fener::test {

using namespace std::chrono_literals;

// A canned Patroni REST API: answers GET <path> with bodies[path] (HTTP 200), anything else
// with 503 and "{}". Counts requests per path. (Non-trivial temporaries are kept out of
// co_await expressions: GCC 12 may destroy them twice.)
struct FakePatroni {
  explicit FakePatroni(asio::io_context& io)
      : acceptor(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io, accept_loop(), asio::detached);
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  }
  asio::awaitable<void> accept_loop() {
    for (;;) {
      asio::ip::tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
      auto sock = std::make_shared<asio::ip::tcp::socket>(std::move(s));
      asio::co_spawn(acceptor.get_executor(), serve(sock), asio::detached);
    }
  }
  asio::awaitable<void> serve(std::shared_ptr<asio::ip::tcp::socket> s) {
    asio::streambuf buf;
    co_await asio::async_read_until(*s, buf, "\r\n\r\n", asio::use_awaitable);
    std::istream in(&buf);
    std::string method, path;
    in >> method >> path;
    ++requests[path];
    auto it = bodies.find(path);
    const bool found = it != bodies.end();
    const std::string body = found ? it->second : "{}";
    const std::string resp =
        std::string("HTTP/1.1 ") + (found ? "200 OK" : "503 Service Unavailable") +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    const auto buffer = asio::buffer(resp);
    co_await asio::async_write(*s, buffer, asio::use_awaitable);
    boost::system::error_code ignored;
    s->shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  }
  asio::ip::tcp::acceptor acceptor;
  std::map<std::string, std::string> bodies;
  std::map<std::string, int> requests;
};

// Runs check->run() to completion (at most 5 s) and returns its result.
inline std::optional<CheckResult> run_check(asio::io_context& io, Check& check, Duration timeout) {
  HttpClient http(io);
  Worker worker;
  CheckContext ctx{http, worker, timeout};
  std::optional<CheckResult> result;
  asio::co_spawn(io, check.run(ctx), [&](std::exception_ptr e, CheckResult r) {
    if (!e) result = std::move(r);
    io.stop();
  });
  io.run_for(5s);
  return result;
}

}  // namespace fener::test
