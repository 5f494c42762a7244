// Runs blocking work (filesystem walks, /proc scans, file reads) off the event loop.
#pragma once

#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace fener {

namespace asio = boost::asio;

class Worker {
 public:
  explicit Worker(std::size_t threads = 1) : pool_(threads) {}
  ~Worker() { pool_.join(); }
  asio::thread_pool& pool() { return pool_; }

 private:
  asio::thread_pool pool_;
};

// Runs f() on the worker and resumes the caller on its own executor with the value.
// If the caller is cancelled first (a deadline), it resumes at once with
// operation_aborted; f still finishes on the worker and its result is dropped, so f must
// be bounded and own everything it touches.
template <class F>
asio::awaitable<std::invoke_result_t<F>> offload(Worker& worker, F f) {
  using R = std::invoke_result_t<F>;
  auto ex = co_await asio::this_coro::executor;
  // A named initiation, not a lambda inside the co_await: GCC 12 mishandles the latter.
  auto init = [&worker, ex](auto handler, F fn) {
    struct State {
      std::atomic<bool> done{false};
      decltype(handler) h;
      // The loop has nothing else to wait for while the job runs; keep it alive.
      asio::executor_work_guard<asio::any_io_executor> guard;
      State(decltype(handler)&& hh, const asio::any_io_executor& e) : h(std::move(hh)), guard(e) {}
    };
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto st = std::make_shared<State>(std::move(handler), ex);
    if (slot.is_connected()) {
      slot.assign([st, ex](asio::cancellation_type) {
        if (st->done.exchange(true)) return;
        asio::post(ex, [st] {
          asio::get_associated_cancellation_slot(st->h).clear();
          st->guard.reset();
          std::move(st->h)(
              std::make_exception_ptr(boost::system::system_error(asio::error::operation_aborted)),
              std::optional<R>{});
        });
      });
    }
    asio::post(worker.pool(), [st, ex, fn = std::move(fn)]() mutable {
      std::exception_ptr err;
      std::optional<R> value;
      try {
        value.emplace(fn());
      } catch (...) {
        err = std::current_exception();
      }
      if (st->done.exchange(true)) return;  // the caller already gave up
      asio::post(ex, [st, err, value = std::move(value)]() mutable {
        asio::get_associated_cancellation_slot(st->h).clear();
        st->guard.reset();
        std::move(st->h)(err, std::move(value));
      });
    });
  };
  auto result = co_await asio::async_initiate<const decltype(asio::use_awaitable)&,
                                              void(std::exception_ptr, std::optional<R>)>(
      std::move(init), asio::use_awaitable, std::move(f));
  co_return std::move(*result);
}

}  // namespace fener
