#include "remedies/patroni_restart.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "remedies/patroni_rest.hpp"

// GCC 12 at -O2 pairs Asio's coroutine-frame operator new/delete wrongly after inlining
// the `||` of two coroutines and warns; the frames are allocated and freed by one class.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace fener {

using namespace asio::experimental::awaitable_operators;

namespace {

// Does PostgreSQL accept TCP connections at host:port? Refused or silent: no.
asio::awaitable<bool> accepts(std::string host, int port) {
  auto ex = co_await asio::this_coro::executor;
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) co_return false;
  asio::ip::tcp::socket sock(ex);
  asio::steady_timer timer(ex, std::chrono::milliseconds(500));
  const asio::ip::tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  auto r = co_await (sock.async_connect(ep, asio::as_tuple(asio::use_awaitable)) ||
                     timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  co_return r.index() == 0 && !std::get<0>(std::get<0>(r));
}

class PatroniRestart final : public Remedy {
 public:
  explicit PatroniRestart(bool when_down) : when_down_(when_down) {}

  Risk risk() const override { return Risk::disruptive; }
  bool interrupts_postgres() const override { return true; }

  std::string plan(const RemedyContext& ctx) const override {
    return "POST " + ctx.config.patroni_url + "/restart (Patroni restarts PostgreSQL)" +
           (when_down_ ? " if nothing accepts connections on " + ctx.config.pg_listen : "");
  }

  asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) override {
    if (when_down_ && !ctx.config.pg_listen.empty()) {
      std::string host = host_of(ctx.config.pg_listen);
      const int port = port_of(ctx.config.pg_listen, 5432);
      if (co_await accepts(std::move(host), port))
        co_return RemedyOutcome::nothing_to_do("PostgreSQL accepts connections on " +
                                               ctx.config.pg_listen + "; no restart needed");
    }
    // Named locals, not temporaries inside co_await (GCC 12 destroys those twice).
    std::string path = "/restart";
    std::string body = "{}";
    auto r = co_await patroni_post(ctx.http, ctx.config, path, std::move(body), ctx.timeout);
    json details = {{"request", "POST /restart"}, {"answer", describe_answer(r)}};
    if (r.ok() && (r.status == 200 || r.status == 202))
      co_return RemedyOutcome::success("Patroni: " + snippet(r.body, 120), std::move(details));
    co_return RemedyOutcome::failure("restart refused or failed: " + describe_answer(r),
                                     std::move(details));
  }

 private:
  bool when_down_;
};

}  // namespace

std::unique_ptr<Remedy> make_patroni_restart_remedy(YamlMap& params, const Config& config) {
  if (config.patroni_url.empty())
    params.fail_here(
        "patroni_restart needs Patroni on this node (patroni.url or --patroni-config)");
  const bool when_down = params.boolean("when_down").value_or(false);
  if (when_down && config.pg_listen.empty())
    params.fail("when_down", "needs PostgreSQL's listen address (postgresql.listen)");
  return std::make_unique<PatroniRestart>(when_down);
}

}  // namespace fener
