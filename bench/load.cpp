// A small closed-loop load client for line and HTTP/1.0 endpoints: C connections, each
// connecting, sending one request, reading until the server closes, and starting over, for
// D seconds. Prints answers per second and latency percentiles, so fener's agent-check and
// Patroni's REST API are measured by the same client in the same run.
//
//   fener-load agent HOST:PORT [connections] [seconds] [line]   (line default "primary")
//   fener-load http  HOST:PORT PATH [connections] [seconds]     (GET PATH, e.g. /primary)
//   fener-load agent-idle HOST:PORT IDLE ACTIVE [seconds] [line]
//
// agent-idle is the hostile case for the agent-check port: IDLE connections connect, send
// nothing and wait for the server to close (then connect again at once), while ACTIVE
// clients send their line and measure as in `agent`. Every attempt has a 5 s deadline.
// Its JSON adds the answers seen by first line, the failures by kind, and the idle side's
// count of connections and of those closed with no answer. fener-load raises its own
// descriptor limit (soft to hard) for the many connections.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
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

// agent-idle: counts by kind of outcome.
struct Mixed {
  Totals active;
  std::map<std::string, long> answers;  // by first line, active clients
  long connect_failed = 0;              // active: connect() failed or timed out
  long closed_empty = 0;                // active: closed without an answer (rejected, evicted)
  long timed_out = 0;                   // active: no answer within 5 s
  long idle_connects = 0;
  long idle_answered = 0;      // idle: got a line (the default role, after read_wait)
  long idle_closed_empty = 0;  // idle: closed with nothing (evicted or rejected)
  long idle_failed = 0;        // idle: connect failed
};

constexpr auto kAttempt = std::chrono::seconds(5);

// One exchange with a deadline: the socket is closed when it passes. "" when nothing came.
asio::awaitable<std::string> exchange(tcp::endpoint ep, const std::string& request,
                                      boost::system::error_code& ec, bool& connected,
                                      bool& expired) {
  auto ex = co_await asio::this_coro::executor;
  // Shared with the deadline's handler, which may run after this frame is gone.
  auto s = std::make_shared<tcp::socket>(ex);
  auto fired = std::make_shared<bool>(false);
  asio::steady_timer deadline(ex, kAttempt);
  deadline.async_wait([s, fired](boost::system::error_code e) {
    if (e) return;
    *fired = true;
    boost::system::error_code ignored;
    s->close(ignored);
  });
  co_await s->async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
  connected = !ec;
  if (!ec && !request.empty())
    co_await asio::async_write(*s, asio::buffer(request),
                               asio::redirect_error(asio::use_awaitable, ec));
  std::string answer;
  if (!ec) {
    co_await asio::async_read(*s, asio::dynamic_buffer(answer, 1 << 20),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::eof || ec == asio::error::connection_reset) ec = {};
  }
  deadline.cancel();
  expired = *fired;
  boost::system::error_code ignored;
  s->close(ignored);
  co_return answer;
}

asio::awaitable<void> active_client(tcp::endpoint ep, std::string request, Clock::time_point end,
                                    Mixed& m) {
  while (Clock::now() < end) {
    const auto start = Clock::now();
    boost::system::error_code ec;
    bool connected = false;
    bool expired = false;
    std::string answer = co_await exchange(ep, request, ec, connected, expired);
    if (expired) {
      ++m.timed_out;
    } else if (!connected) {
      ++m.connect_failed;
    } else if (answer.empty()) {
      ++m.closed_empty;
    } else {
      ++m.answers[answer.substr(0, answer.find('\n'))];
      m.active.latencies_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      continue;
    }
    ++m.active.errors;
  }
}

asio::awaitable<void> idle_client(tcp::endpoint ep, Clock::time_point end, Mixed& m) {
  auto ex = co_await asio::this_coro::executor;
  while (Clock::now() < end) {
    boost::system::error_code ec;
    bool connected = false;
    bool expired = false;
    std::string answer = co_await exchange(ep, "", ec, connected, expired);
    if (!connected) {
      ++m.idle_failed;
      // Out of ports or descriptors: do not spin.
      asio::steady_timer pause(ex, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    ++m.idle_connects;
    ++(answer.empty() ? m.idle_closed_empty : m.idle_answered);
  }
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out + "\"";
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

int run_mixed(const tcp::endpoint& ep, const char* target, int idle, int active, int secs,
              const std::string& line) {
  // Two loops on two threads: the measured clients never queue behind the idle ones'
  // events in the client itself. Each thread touches only its own counters in m.
  asio::io_context idle_io;
  asio::io_context active_io;
  Mixed m;
  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(secs);
  for (int i = 0; i < idle; ++i) asio::co_spawn(idle_io, idle_client(ep, end, m), asio::detached);
  for (int i = 0; i < active; ++i)
    asio::co_spawn(active_io, active_client(ep, line + "\n", end, m), asio::detached);
  std::thread idle_thread([&idle_io] { idle_io.run(); });
  active_io.run();
  idle_thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  auto& lat = m.active.latencies_ms;
  const auto n = lat.size();
  const long attempts = static_cast<long>(n) + m.active.errors;
  std::string answers;
  for (const auto& [text, count] : m.answers)
    answers += (answers.empty() ? "" : ",") + json_string(text) + ":" + std::to_string(count);
  std::printf(
      "{\"mode\":\"agent-idle\",\"target\":\"%s\",\"idle\":%d,\"active\":%d,"
      "\"seconds\":%.1f,\"answers\":%zu,\"errors\":%ld,\"success_rate\":%.4f,"
      "\"per_second\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,"
      "\"connect_failed\":%ld,\"closed_empty\":%ld,\"timed_out\":%ld,"
      "\"idle_connects\":%ld,\"idle_answered\":%ld,\"idle_closed_empty\":%ld,"
      "\"idle_failed\":%ld,\"answers_by_line\":{%s}}\n",
      target, idle, active, elapsed, n, m.active.errors,
      attempts ? static_cast<double>(n) / static_cast<double>(attempts) : 0.0,
      static_cast<double>(n) / elapsed, pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1.0),
      m.connect_failed, m.closed_empty, m.timed_out, m.idle_connects, m.idle_answered,
      m.idle_closed_empty, m.idle_failed, answers.c_str());
  return n ? 0 : 1;
}

void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s agent HOST:PORT [connections] [seconds] [line]\n"
                 "       %s http HOST:PORT PATH [connections] [seconds]\n"
                 "       %s agent-idle HOST:PORT IDLE ACTIVE [seconds] [line]\n",
                 argv[0], argv[0], argv[0]);
    return 64;
  }
  raise_fd_limit();
  const std::string mode = argv[1];
  const tcp::endpoint ep = endpoint(argv[2]);
  if (mode == "agent-idle") {
    if (argc < 5) return 64;
    return run_mixed(ep, argv[2], std::atoi(argv[3]), std::atoi(argv[4]),
                     argc > 5 ? std::atoi(argv[5]) : 10, argc > 6 ? argv[6] : "primary");
  }
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
