// Telling systemd how fener is doing (sd_notify(3)): readiness, a one-line status, the
// watchdog keep-alive, stopping and reloading. Every call is a no-op when fener does not
// run under a Type=notify unit (NOTIFY_SOCKET unset), so the daemon calls them always.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "src/config.hpp"
#include "src/scheduler.hpp"

namespace fener {

namespace asio = boost::asio;

// Thin wrappers over sd_notify(). The message is one datagram on a local socket that the
// service manager drains at once: in practice it never blocks, so these are called on the
// event loop directly. Failures are ignored (logged at debug): a lost notification must
// not take the daemon down.
namespace notify {

bool enabled();                       // NOTIFY_SOCKET is set
void ready();                         // READY=1
void ready(std::string_view status);  // READY=1 and STATUS= in one message
void status(std::string_view line);   // STATUS=line (newlines become spaces)
void watchdog();                      // WATCHDOG=1
void stopping();                      // STOPPING=1
// RELOADING=1 with MONOTONIC_USEC= (systemd 253 and later require it for
// Type=notify-reload; earlier versions ignore the extra field). Send ready() when done.
void reloading();

// The watchdog interval the service manager expects keep-alives within
// (sd_watchdog_enabled: WATCHDOG_USEC, and WATCHDOG_PID when set must be this process);
// nullopt when there is no watchdog.
std::optional<std::chrono::microseconds> watchdog_interval();

}  // namespace notify

// The daemon's handle on the service manager. It owns the watchdog timer, which runs on
// the event loop itself: when the loop stalls, the keep-alives stop and systemd restarts
// fener, which is the point of the watchdog.
class SystemdNotifier {
 public:
  explicit SystemdNotifier(asio::io_context& io);
  ~SystemdNotifier();
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  bool enabled() const { return enabled_; }
  // Sends WATCHDOG=1 now and then every half interval while the loop runs; no-op without
  // a watchdog. The pending timer keeps io.run() from running out of work until
  // stop_watchdog() (the daemon ends its loop with io.stop() anyway).
  void start_watchdog();
  void stop_watchdog();
  std::optional<std::chrono::microseconds> watchdog_interval() const { return interval_; }

  void ready(const std::string& status);
  // Sends STATUS= only when the line differs from the last one sent.
  void status(const std::string& line);
  void stopping();
  void reloading();

 private:
  void arm();

  asio::steady_timer timer_;
  bool enabled_;
  std::optional<std::chrono::microseconds> interval_;
  bool feeding_ = false;
  std::string last_status_;
};

// The one-line STATUS summary `systemctl status fener` shows, e.g.
// "7 checks: 6 passing, 1 critical (patroni_node); mode safe". Non-passing checks are
// named (as many as fit), checks without a first result count as pending, rules that gave
// up are listed. At most max_len bytes.
std::string status_line(const std::vector<CheckState>& checks, Mode mode,
                        const std::vector<std::string>& gave_up = {}, std::size_t max_len = 200);

}  // namespace fener
