// Runs checks: once (fener check) or forever on their intervals (fener run), each with a
// deadline, start jitter, a faster interval while unhealthy and rise/fall thresholds.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "checks/registry.hpp"
#include "src/check.hpp"
#include "src/debounce.hpp"

namespace fener {

class HttpClient;
class Worker;

// Runs one probe with its deadline. A check that does not finish in time is cancelled and
// reported unknown; an exception escaping a check is reported unknown, not rethrown.
asio::awaitable<CheckResult> run_with_deadline(Check& check, CheckContext& ctx);

// Runs every check once, concurrently; results in the order of `checks`.
asio::awaitable<std::vector<CheckResult>> run_all_once(std::vector<BuiltCheck>& checks,
                                                       HttpClient& http, Worker& worker);

struct CheckState {
  std::string name;
  std::string type;
  std::optional<Status> published;                // nullopt until the first result
  CheckResult last;                               // the latest raw result
  std::chrono::system_clock::time_point since{};  // when `published` last changed
  int streak = 0;                                 // consecutive results equal to last.status
};

class Scheduler {
 public:
  // Called on every change of a check's published status (old is nullopt the first time).
  using OnChange = std::function<void(const CheckState&, std::optional<Status> old)>;
  // Called after every result, changed or not.
  using OnResult = std::function<void(const CheckState&)>;

  Scheduler(asio::io_context& io, HttpClient& http, Worker& worker, std::vector<BuiltCheck> checks);
  ~Scheduler();

  void on_change(OnChange f) { on_change_ = std::move(f); }
  void on_result(OnResult f) { on_result_ = std::move(f); }

  void start();
  // Cancels every loop; safe to call twice. Loops end at their next suspension point.
  void stop();

  // Runs the named check as soon as possible instead of at its next interval (a leader
  // change seen in etcd re-checks Patroni at once). A run in progress is followed by
  // another. Such extra results update the check's `last` (the agent-check reads it) but
  // do not count for rise/fall nor reach the rules: polling faster during a switchover
  // must not make a remedy fire sooner. False when no check has that name.
  bool run_now(const std::string& name);

  const std::vector<CheckState>& states() const { return states_; }
  // True once every check has published a first result.
  bool all_reported() const;
  // Loops still running; after stop() the object may be destroyed once this is 0.
  std::size_t active() const { return *active_; }

 private:
  asio::awaitable<void> loop(std::size_t index);

  asio::io_context& io_;
  HttpClient& http_;
  Worker& worker_;
  std::vector<BuiltCheck> checks_;
  std::vector<CheckState> states_;
  std::vector<Debouncer> debouncers_;
  std::vector<std::unique_ptr<asio::cancellation_signal>> stops_;
  std::vector<asio::steady_timer*> sleeping_;  // the loop's timer while it waits, else null
  std::vector<bool> poked_;
  OnChange on_change_;
  OnResult on_result_;
  bool running_ = false;
  // Shared with the loops, which may be destroyed after the scheduler at exit.
  std::shared_ptr<std::size_t> active_ = std::make_shared<std::size_t>(0);
};

}  // namespace fener
