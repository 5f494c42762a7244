// The sd_notify wrapper against a real notification socket, and the STATUS= line.
#include "src/systemd_notify.hpp"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/post.hpp>

using namespace fener;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// Sets (or, with nullopt, unsets) an environment variable and restores it at scope exit.
struct EnvVar {
  std::string name;
  std::optional<std::string> saved;
  EnvVar(std::string n, std::optional<std::string> value) : name(std::move(n)) {
    if (const char* old = std::getenv(name.c_str())) saved = old;
    if (value)
      ::setenv(name.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
  ~EnvVar() {
    if (saved)
      ::setenv(name.c_str(), saved->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
  EnvVar(const EnvVar&) = delete;
  EnvVar& operator=(const EnvVar&) = delete;
};

// The service manager's end: a datagram socket in a scratch directory that collects
// every notification sent to it while the io_context runs.
struct NotifySocket {
  fs::path dir;
  asio::local::datagram_protocol::socket socket;
  std::vector<std::string> messages;
  std::array<char, 4096> buf{};

  explicit NotifySocket(asio::io_context& io) : socket(io) {
    std::string tmpl = "/tmp/fener-notify-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    socket.open();
    socket.bind(asio::local::datagram_protocol::endpoint((dir / "notify").string()));
    receive();
  }
  ~NotifySocket() {
    boost::system::error_code ec;
    socket.close(ec);
    std::error_code fec;
    fs::remove_all(dir, fec);
  }
  std::string path() const { return (dir / "notify").string(); }
  void receive() {
    socket.async_receive(asio::buffer(buf), [this](boost::system::error_code ec, std::size_t n) {
      if (ec) return;
      messages.emplace_back(buf.data(), n);
      receive();
    });
  }
  std::size_t count(const std::string& m) const {
    return static_cast<std::size_t>(std::count(messages.begin(), messages.end(), m));
  }
};

// Runs io until done() holds or 5 s pass; returns done().
bool run_until(asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(20ms);
  }
  return done();
}

CheckState state(const std::string& name, std::optional<Status> published) {
  CheckState s;
  s.name = name;
  s.type = name;
  s.published = published;
  return s;
}

}  // namespace

TEST_SUITE("systemd notify") {
  TEST_CASE("without NOTIFY_SOCKET every call is a no-op") {
    EnvVar sock("NOTIFY_SOCKET", std::nullopt);
    EnvVar usec("WATCHDOG_USEC", "1000000");
    EnvVar pid("WATCHDOG_PID", std::nullopt);
    asio::io_context io;
    SystemdNotifier n(io);
    CHECK_FALSE(n.enabled());
    CHECK_FALSE(n.watchdog_interval());
    n.start_watchdog();
    n.ready("x");
    n.status("y");
    n.reloading();
    n.stopping();
    // No watchdog timer was armed: the loop has nothing to do.
    CHECK(io.run_for(1s) == 0);
  }

  TEST_CASE("READY, STATUS, RELOADING and STOPPING reach the socket") {
    asio::io_context io;
    NotifySocket ns(io);
    EnvVar sock("NOTIFY_SOCKET", ns.path());
    EnvVar usec("WATCHDOG_USEC", std::nullopt);
    SystemdNotifier n(io);
    REQUIRE(n.enabled());
    CHECK_FALSE(n.watchdog_interval());
    n.ready("2 checks: 2 passing; mode safe");
    n.status("2 checks: 2 passing; mode safe");  // unchanged: not sent again
    n.status("line one\nline two");
    n.reloading();
    n.stopping();
    REQUIRE(run_until(io, [&] { return ns.messages.size() >= 4; }));
    REQUIRE(ns.messages.size() == 4);
    CHECK(ns.messages[0] == "READY=1\nSTATUS=2 checks: 2 passing; mode safe");
    CHECK(ns.messages[1] == "STATUS=line one line two");
    CHECK(ns.messages[2].rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
    const std::string usec_text = ns.messages[2].substr(ns.messages[2].find("USEC=") + 5);
    CHECK_FALSE(usec_text.empty());
    CHECK(usec_text.find_first_not_of("0123456789") == std::string::npos);
    CHECK(ns.messages[3] == "STOPPING=1");
  }

  TEST_CASE("the watchdog is fed from a timer on the loop at half the interval") {
    asio::io_context io;
    NotifySocket ns(io);
    EnvVar sock("NOTIFY_SOCKET", ns.path());
    EnvVar usec("WATCHDOG_USEC", "200000");
    EnvVar pid("WATCHDOG_PID", std::to_string(::getpid()));
    SystemdNotifier n(io);
    REQUIRE(n.watchdog_interval());
    CHECK(*n.watchdog_interval() == 200ms);
    n.start_watchdog();
    n.start_watchdog();  // a second start does not double the timer
    // The first keep-alive at once, then one per 100 ms while the loop runs.
    REQUIRE(run_until(io, [&] { return ns.count("WATCHDOG=1") >= 3; }));
    n.stop_watchdog();
    // Stopped: with the socket closed too, the loop runs out of work (an armed timer
    // would keep it running for the whole second).
    ns.socket.close();
    io.restart();
    io.run_for(1s);
    CHECK(io.stopped());
  }

  TEST_CASE("a stalled loop does not feed the watchdog") {
    asio::io_context io;
    NotifySocket ns(io);
    EnvVar sock("NOTIFY_SOCKET", ns.path());
    EnvVar usec("WATCHDOG_USEC", "200000");
    EnvVar pid("WATCHDOG_PID", std::nullopt);  // unset: the watchdog is for whoever reads it
    SystemdNotifier n(io);
    n.start_watchdog();
    REQUIRE(run_until(io, [&] { return ns.count("WATCHDOG=1") >= 1; }));
    // A handler that holds the loop for three feeding periods, watching the socket: no
    // keep-alive may arrive while the loop is stuck.
    int ready = -1;
    asio::post(io, [&] {
      // What was sent before the stall is taken off the socket first.
      char buf[256];
      ssize_t got;
      while ((got = ::recv(ns.socket.native_handle(), buf, sizeof buf, MSG_DONTWAIT)) > 0)
        ns.messages.emplace_back(buf, static_cast<std::size_t>(got));
      pollfd p{ns.socket.native_handle(), POLLIN, 0};
      ready = ::poll(&p, 1, 300);
    });
    REQUIRE(run_until(io, [&] { return ready != -1; }));
    const auto fed = ns.count("WATCHDOG=1");
    CHECK(ready == 0);
    // Once the loop runs again, so does the watchdog.
    CHECK(run_until(io, [&] { return ns.count("WATCHDOG=1") > fed; }));
  }

  TEST_CASE("a watchdog meant for another process is not ours") {
    asio::io_context io;
    NotifySocket ns(io);
    EnvVar sock("NOTIFY_SOCKET", ns.path());
    EnvVar usec("WATCHDOG_USEC", "200000");
    EnvVar pid("WATCHDOG_PID", std::to_string(::getpid() + 1));
    SystemdNotifier n(io);
    CHECK(n.enabled());
    CHECK_FALSE(n.watchdog_interval());
  }
}

TEST_SUITE("status_line") {
  TEST_CASE("counts by status and names what is not passing") {
    std::vector<CheckState> s = {
        state("etcd_health", Status::passing),       state("etcd_members", Status::passing),
        state("patroni_node", Status::critical),     state("patroni_cluster", Status::warning),
        state("listening_sockets", Status::unknown), state("datadir", std::nullopt),
        state("config_lint", Status::passing)};
    CHECK(status_line(s, Mode::safe) ==
          "7 checks: 3 passing, 1 warning (patroni_cluster), 1 critical (patroni_node), "
          "1 unknown (listening_sockets), 1 pending; mode safe");
  }

  TEST_CASE("all passing, one check, none") {
    CHECK(status_line({state("datadir", Status::passing)}, Mode::observe) ==
          "1 check: 1 passing; mode observe");
    CHECK(status_line({}, Mode::full) == "0 checks; mode full");
  }

  TEST_CASE("rules that gave up are listed") {
    CHECK(status_line({state("patroni_node", Status::critical)}, Mode::safe, {"postgres_down"}) ==
          "1 check: 1 critical (patroni_node); mode safe; gave up: postgres_down");
  }

  TEST_CASE("long lists are cut to the bound, counts kept") {
    std::vector<CheckState> s;
    for (int i = 0; i < 40; ++i)
      s.push_back(state("a_rather_long_check_name_" + std::to_string(i), Status::critical));
    const std::string line = status_line(s, Mode::safe, {}, 120);
    CHECK(line.size() <= 120);
    CHECK(line.rfind("40 checks: 40 critical (a_rather_long_check_name_0, ", 0) == 0);
    CHECK(line.find(" more); mode safe") != std::string::npos);
    // Even a tiny bound holds.
    CHECK(status_line(s, Mode::safe, {}, 10).size() <= 10);
  }
}
