#include "remedies/patroni_reinit.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "remedies/patroni_rest.hpp"
#include "src/cluster_http.hpp"
#include "src/process.hpp"

namespace fener {

namespace {

class PatroniReinit final : public Remedy {
 public:
  explicit PatroniReinit(std::string patronictl) : patronictl_(std::move(patronictl)) {}

  Risk risk() const override { return Risk::destructive; }
  bool interrupts_postgres() const override { return true; }

  std::string plan(const RemedyContext& ctx) const override {
    return "reinit member " + ctx.config.node_name + " of " + ctx.config.scope + " from leader " +
           ctx.facts.leader_name.value_or("?") + ": POST " + ctx.config.patroni_url +
           "/reinitialize {\"force\": true}";
  }

  asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) override {
    const auto deadline = std::chrono::steady_clock::now() + ctx.timeout;
    json details = json::object();
    // Named locals, not temporaries inside co_await (GCC 12 destroys those twice).
    std::string path = "/reinitialize";
    std::string body = R"({"force": true})";
    auto r = co_await patroni_post(ctx.http, ctx.config, path, std::move(body),
                                   Duration(std::chrono::seconds(30)));
    details["request"] = "POST /reinitialize {\"force\": true}";
    details["answer"] = describe_answer(r);
    if (r.ok() && r.status == 503) {
      // Patroni's own refusal (leader, no leader, in progress): never argue with it.
      co_return RemedyOutcome::failure("Patroni refused: " + snippet(r.body, 160), details);
    }
    if (!r.ok() || r.status != 200) {
      ProcessRequest pr;
      pr.argv = {patronictl_,
                 "-c",
                 ctx.config.patroni_config,
                 "reinit",
                 "--force",
                 ctx.config.scope,
                 ctx.config.node_name};
      pr.timeout = std::chrono::seconds(60);
      if (ctx.config.patroni_config.empty())
        co_return RemedyOutcome::failure(
            "REST call failed (" + describe_answer(r) + ") and no patroni.yml for patronictl",
            details);
      auto p = co_await run_process(std::move(pr));
      details["patronictl"] = {{"result", p.describe()}, {"output", snippet(p.output, 400)}};
      if (!p.started || p.exit_code != 0)
        co_return RemedyOutcome::failure("patronictl reinit failed: " + p.describe(), details);
    }
    // Wait for the member to come back; the engine's settle then re-checks everything.
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex);
    std::string last = "?";
    bool left_running = false;
    while (std::chrono::steady_clock::now() < deadline - std::chrono::seconds(1)) {
      HttpRequest get =
          patroni_request(ctx.config, ctx.config.patroni_url + "/patroni", std::chrono::seconds(2));
      auto s = co_await ctx.http.fetch(std::move(get));
      if (s.ok()) {
        if (auto j = parse_json(s.body);
            j && j->is_object() && j->contains("state") && (*j)["state"].is_string()) {
          last = (*j)["state"].get<std::string>();
          // The reinit first stops PostgreSQL; "running" before that is the old state.
          if (last != "running") left_running = true;
          if (last == "running" && left_running) {
            details["final_state"] = last;
            co_return RemedyOutcome::success("reinitialized from the leader; state running",
                                             details);
          }
        }
      }
      timer.expires_after(std::chrono::seconds(1));
      co_await timer.async_wait(asio::use_awaitable);
    }
    details["final_state"] = last;
    co_return RemedyOutcome::failure(
        "reinit started but the member is not running yet (state " + last + ")", details);
  }

 private:
  std::string patronictl_;
};

}  // namespace

std::unique_ptr<Remedy> make_patroni_reinit_remedy(YamlMap& params, const Config& config) {
  if (config.patroni_url.empty())
    params.fail_here("patroni_reinit needs Patroni on this node (patroni.url or --patroni-config)");
  std::string ctl = params.str("patronictl").value_or("/usr/bin/patronictl");
  if (ctl.empty() || ctl.front() != '/') params.fail("patronictl", "expected an absolute path");
  return std::make_unique<PatroniReinit>(std::move(ctl));
}

}  // namespace fener
