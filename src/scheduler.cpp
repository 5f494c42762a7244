#include "src/scheduler.hpp"

#include <random>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "src/http_client.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

using namespace asio::experimental::awaitable_operators;
using SteadyClock = std::chrono::steady_clock;

asio::awaitable<CheckResult> guarded(Check& check, CheckContext& ctx) {
  try {
    co_return co_await check.run(ctx);
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::operation_aborted) throw;  // the deadline won
    co_return CheckResult::make(Status::unknown, std::string("check failed: ") + e.what());
  } catch (const std::exception& e) {
    co_return CheckResult::make(Status::unknown, std::string("check failed: ") + e.what());
  }
}

Duration jitter_up_to(Duration max) {
  if (max.count() <= 0) return Duration{0};
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return Duration{std::uniform_int_distribution<Duration::rep>(0, max.count())(rng)};
}

}  // namespace

asio::awaitable<CheckResult> run_with_deadline(Check& check, CheckContext& ctx) {
  const auto started = SteadyClock::now();
  asio::steady_timer deadline(co_await asio::this_coro::executor, ctx.timeout);
  CheckResult result;
  try {
    auto outcome = co_await (guarded(check, ctx) || deadline.async_wait(asio::use_awaitable));
    if (outcome.index() == 0) {
      result = std::move(std::get<0>(outcome));
    } else {
      result = CheckResult::make(
          Status::unknown, "no result within the " + format_duration(ctx.timeout) + " timeout",
          {{"error", "timeout"}});
    }
  } catch (const std::exception& e) {
    result = CheckResult::make(Status::unknown, std::string("check failed: ") + e.what());
  }
  result.duration =
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started);
  result.at = std::chrono::system_clock::now();
  co_return result;
}

asio::awaitable<std::vector<CheckResult>> run_all_once(std::vector<BuiltCheck>& checks,
                                                       HttpClient& http, Worker& worker) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<CheckContext> contexts;
  contexts.reserve(checks.size());
  for (auto& c : checks) contexts.push_back(CheckContext{http, worker, c.spec.timing.timeout});
  using Op = decltype(asio::co_spawn(ex, run_with_deadline(*checks[0].check, contexts[0]),
                                     asio::deferred));
  std::vector<Op> ops;
  for (std::size_t i = 0; i < checks.size(); ++i)
    ops.push_back(
        asio::co_spawn(ex, run_with_deadline(*checks[i].check, contexts[i]), asio::deferred));
  std::vector<CheckResult> out(checks.size());
  if (ops.empty()) co_return out;
  auto [order, errors, results] =
      co_await asio::experimental::make_parallel_group(std::move(ops))
          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  for (std::size_t i = 0; i < results.size(); ++i) out[i] = std::move(results[i]);
  co_return out;
}

Scheduler::Scheduler(asio::io_context& io, HttpClient& http, Worker& worker,
                     std::vector<BuiltCheck> checks)
    : io_(io), http_(http), worker_(worker), checks_(std::move(checks)) {
  for (const auto& c : checks_) {
    CheckState s;
    s.name = c.spec.name;
    s.type = c.spec.type;
    states_.push_back(std::move(s));
    debouncers_.emplace_back(c.spec.timing.rise, c.spec.timing.fall);
  }
  sleeping_.assign(checks_.size(), nullptr);
  poked_.assign(checks_.size(), false);
}

Scheduler::~Scheduler() {
  stop();
}

void Scheduler::start() {
  if (running_) return;
  running_ = true;
  for (std::size_t i = 0; i < checks_.size(); ++i) {
    stops_.push_back(std::make_unique<asio::cancellation_signal>());
    asio::co_spawn(io_, loop(i),
                   asio::bind_cancellation_slot(stops_.back()->slot(), asio::detached));
  }
}

void Scheduler::stop() {
  if (!running_) return;
  running_ = false;
  for (auto& s : stops_) s->emit(asio::cancellation_type::terminal);
}

bool Scheduler::run_now(const std::string& name) {
  for (std::size_t i = 0; i < checks_.size(); ++i) {
    if (checks_[i].spec.name != name) continue;
    poked_[i] = true;
    if (sleeping_[i]) sleeping_[i]->cancel();
    return true;
  }
  return false;
}

bool Scheduler::all_reported() const {
  for (const auto& s : states_)
    if (!s.published) return false;
  return true;
}

asio::awaitable<void> Scheduler::loop(std::size_t index) {
  BuiltCheck& built = checks_[index];
  const CheckTiming& t = built.spec.timing;
  asio::steady_timer timer(io_);
  ++*active_;
  struct Leave {
    std::shared_ptr<std::size_t> n;
    ~Leave() { --*n; }
  } leave{active_};
  try {
    // Spread the first runs so that checks (and nodes) do not poll in lockstep.
    timer.expires_after(jitter_up_to(std::min(t.jitter, t.interval)));
    co_await timer.async_wait(asio::use_awaitable);
    bool extra = false;  // this run was asked for by run_now(), not by the schedule
    for (;;) {
      CheckContext ctx{http_, worker_, t.timeout};
      const auto started = SteadyClock::now();
      CheckResult r = co_await run_with_deadline(*built.check, ctx);
      if (!running_) co_return;
      CheckState& st = states_[index];
      if (extra) {
        st.last = std::move(r);
      } else {
        st.streak = (st.last.status == r.status && st.published) ? st.streak + 1 : 1;
        st.last = std::move(r);
        const auto old = st.published;
        if (auto changed = debouncers_[index].feed(st.last.status)) {
          st.published = *changed;
          st.since = st.last.at;
          if (on_change_) on_change_(st, old);
        }
        if (on_result_) on_result_(st);
      }
      extra = false;
      if (poked_[index]) {  // asked for while it ran: run again now
        poked_[index] = false;
        extra = true;
        continue;
      }
      const bool healthy = st.last.status == Status::passing && st.published == Status::passing;
      const Duration wait = healthy ? t.interval : std::min(t.interval, t.unhealthy_interval);
      // Intervals are measured start to start, so a slow check does not drift the schedule.
      timer.expires_at(started + wait);
      sleeping_[index] = &timer;
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      sleeping_[index] = nullptr;
      if (!running_) co_return;
      // operation_aborted here is run_now() cutting the wait short; stop() was seen above.
      if (ec && ec != asio::error::operation_aborted) co_return;
      if (poked_[index]) {
        poked_[index] = false;
        extra = true;
      }
    }
  } catch (const boost::system::system_error&) {
    // Cancelled by stop().
  }
}

}  // namespace fener
