#include "remedies/patroni_restart.hpp"

#include "remedies/patroni_rest.hpp"

namespace fener {

namespace {

class PatroniRestart final : public Remedy {
 public:
  Risk risk() const override { return Risk::disruptive; }

  std::string plan(const RemedyContext& ctx) const override {
    return "POST " + ctx.config.patroni_url + "/restart (Patroni restarts PostgreSQL)";
  }

  asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) override {
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
};

}  // namespace

std::unique_ptr<Remedy> make_patroni_restart_remedy(YamlMap& params, const Config& config) {
  if (config.patroni_url.empty())
    params.fail_here(
        "patroni_restart needs Patroni on this node (patroni.url or --patroni-config)");
  return std::make_unique<PatroniRestart>();
}

}  // namespace fener
