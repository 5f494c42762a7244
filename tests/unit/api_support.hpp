// Test helpers for fener's own API server: running a coroutine to completion, a raw TCP
// client (curl would normalise "..", so traversal targets are sent by hand) and temporary
// directories. (Non-trivial temporaries are kept out of co_await expressions.)
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "src/api_server.hpp"

namespace fener::test {

// Runs f() (returning asio::awaitable<void>) on io until it finishes, at most `limit`;
// rethrows what it threw.
template <class F>
void run_co(asio::io_context& io, F f, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(f), [&](std::exception_ptr e) {
    error = e;
    done = true;
    io.stop();
  });
  io.run_for(limit);
  io.restart();
  if (error) std::rethrow_exception(error);
  REQUIRE_MESSAGE(done, "coroutine did not finish in time");
}

struct RawReply {
  std::string bytes;    // everything the server sent before closing
  bool closed = false;  // the server closed (EOF or reset) within the limit
  std::chrono::milliseconds elapsed{0};
};

// Connects to 127.0.0.1:port, sends `request` (may be empty: a silent client) and reads
// until the server closes or `limit` passes.
inline asio::awaitable<RawReply> raw_exchange(unsigned short port, std::string request,
                                              std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  using tcp = asio::ip::tcp;
  const auto start = std::chrono::steady_clock::now();
  auto ex = co_await asio::this_coro::executor;
  tcp::socket s(ex);
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  co_await s.async_connect(ep, asio::use_awaitable);
  RawReply reply;
  boost::system::error_code ec;
  if (!request.empty()) {
    const auto buffer = asio::buffer(request);
    co_await asio::async_write(s, buffer, asio::redirect_error(asio::use_awaitable, ec));
  }
  asio::steady_timer timer(ex, limit);
  auto read_all = [&]() -> asio::awaitable<void> {
    char buf[4096];
    for (;;) {
      boost::system::error_code rec;
      const auto n = co_await s.async_read_some(asio::buffer(buf),
                                                asio::redirect_error(asio::use_awaitable, rec));
      if (rec) {
        reply.closed = true;
        co_return;
      }
      reply.bytes.append(buf, n);
    }
  };
  auto reader = read_all();
  co_await (std::move(reader) || timer.async_wait(asio::use_awaitable));
  reply.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  co_return reply;
}

// A fresh directory under /tmp, removed with everything below it at scope exit.
struct TempDir {
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fener-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  void write(const std::string& name, const std::string& content, unsigned mode = 0600) const {
    std::ofstream(file(name), std::ios::binary | std::ios::trunc) << content;
    std::filesystem::permissions(file(name), static_cast<std::filesystem::perms>(mode));
  }
  std::string read(const std::string& name) const {
    std::ifstream in(file(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string path;
};

inline ApiServerOptions local_options(std::string token = "", std::string node = "kaptan1") {
  ApiServerOptions o;
  o.listen = "127.0.0.1:0";
  o.node_name = std::move(node);
  o.token = std::move(token);
  return o;
}

}  // namespace fener::test
