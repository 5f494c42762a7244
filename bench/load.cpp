// A small closed-loop load client for line and HTTP/1.0 endpoints: C connections, each
// connecting, sending one request, reading until the server closes, and starting over, for
// D seconds. Prints answers per second and latency percentiles, so fener's agent-check and
// Patroni's REST API are measured by the same client in the same run.
//
//   fener-load agent HOST:PORT [connections] [seconds] [line]   (line default "primary")
//   fener-load http  HOST:PORT PATH [connections] [seconds]     (GET PATH, e.g. /primary)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Totals {
  std::vector<double> latencies_ms;
  long errors = 0;
  std::string first_answer;
};

asio::awaitable<void> client(tcp::endpoint ep, std::string request, Clock::time_point end,
                             Totals& t) {
  auto ex = co_await asio::this_coro::executor;
  while (Clock::now() < end) {
    const auto start = Clock::now();
    tcp::socket s(ex);
    boost::system::error_code ec;
    co_await s.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec)
      co_await asio::async_write(s, asio::buffer(request),
                                 asio::redirect_error(asio::use_awaitable, ec));
    std::string answer;
    if (!ec) {
      co_await asio::async_read(s, asio::dynamic_buffer(answer, 1 << 20),
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::eof) ec = {};
    }
    if (ec || answer.empty()) {
      ++t.errors;
      continue;
    }
    if (t.first_answer.empty()) t.first_answer = answer.substr(0, answer.find('\n'));
    t.latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
}

tcp::endpoint endpoint(const std::string& hostport) {
  const auto colon = hostport.rfind(':');
  return {asio::ip::make_address(hostport.substr(0, colon)),
          static_cast<unsigned short>(std::atoi(hostport.c_str() + colon + 1))};
}

double pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s agent HOST:PORT [connections] [seconds] [line]\n"
                 "       %s http HOST:PORT PATH [connections] [seconds]\n",
                 argv[0], argv[0]);
    return 64;
  }
  const std::string mode = argv[1];
  const tcp::endpoint ep = endpoint(argv[2]);
  std::string request;
  int arg = 3;
  if (mode == "http") {
    if (argc < 4) return 64;
    request = std::string("GET ") + argv[3] + " HTTP/1.0\r\nHost: " + argv[2] + "\r\n\r\n";
    arg = 4;
  }
  const int conns = argc > arg ? std::atoi(argv[arg]) : 8;
  const int secs = argc > arg + 1 ? std::atoi(argv[arg + 1]) : 10;
  if (mode == "agent") request = std::string(argc > arg + 2 ? argv[arg + 2] : "primary") + "\n";
  asio::io_context io;
  Totals t;
  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(secs);
  for (int i = 0; i < conns; ++i) asio::co_spawn(io, client(ep, request, end, t), asio::detached);
  io.run();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const auto n = t.latencies_ms.size();
  std::printf(
      "{\"mode\":\"%s\",\"target\":\"%s\",\"connections\":%d,\"seconds\":%.1f,\"answers\":%zu,"
      "\"errors\":%ld,\"per_second\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
      mode.c_str(), argv[2], conns, elapsed, n, t.errors, static_cast<double>(n) / elapsed,
      pct(t.latencies_ms, 0.50), pct(t.latencies_ms, 0.99), pct(t.latencies_ms, 1.0));
  std::fprintf(stderr, "first answer: %s\n", t.first_answer.c_str());
  return n ? 0 : 1;
}
