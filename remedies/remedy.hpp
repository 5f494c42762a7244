// The one interface every remedy implements, the context it runs in, and its outcome.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "src/config.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

namespace asio = boost::asio;
using json = nlohmann::json;

class HttpClient;
class Worker;

// How much harm a remedy can do when it runs at the wrong moment. Modes gate by risk:
// observe runs nothing, safe runs safe and disruptive ones, full adds destructive ones.
// Disruptive and destructive remedies also take the cluster-wide lock first.
enum class Risk {
  safe,         // changes nothing a client notices (modes, owners, a missing file)
  disruptive,   // interrupts a service briefly (restart)
  destructive,  // throws data away to rebuild it (reinit)
};
std::string_view to_string(Risk r);

// What the engine learned about the cluster just before acting (fresh, not from the
// last check round). Unset optionals mean "could not tell"; guards treat that as "no".
struct ClusterFacts {
  std::string self_name;
  std::optional<std::string> self_role;   // Patroni role of this node (master/primary/replica...)
  std::optional<std::string> self_state;  // Patroni state of this node
  std::optional<std::string> self_sysid;  // database_system_identifier, when Patroni knows it
  std::optional<bool> self_holds_leader_key;
  std::optional<std::string> leader_name;  // holder of the leader key
  std::optional<std::string> leader_host;  // host of the leader's PostgreSQL / fener
  std::optional<std::string> leader_api_url;
  std::optional<std::string> leader_state;  // the leader's PostgreSQL state (running, ...)
  std::optional<std::string> leader_sysid;
  std::optional<std::string> cluster_sysid;  // the `initialize` key in the DCS
  std::optional<bool> paused;
  std::optional<bool> etcd_quorum;
  json evidence = json::object();  // how each fact was learnt, for the audit
};

struct RemedyContext {
  HttpClient& http;
  Worker& worker;
  const Config& config;
  const ClusterFacts& facts;
  Duration timeout;  // the whole action's deadline; the engine also cancels at it
};

struct RemedyOutcome {
  bool ok = false;
  std::string message;            // one line, for humans
  json details = json::object();  // what changed, what was asked, what was answered
  // false when the remedy found nothing to do (e.g. modes already right): the engine then
  // moves to the next step at once instead of settling on a no-op.
  bool changed = true;

  static RemedyOutcome success(std::string message, json details = json::object()) {
    return {true, std::move(message), std::move(details), true};
  }
  static RemedyOutcome nothing_to_do(std::string message, json details = json::object()) {
    return {true, std::move(message), std::move(details), false};
  }
  static RemedyOutcome failure(std::string message, json details = json::object()) {
    return {false, std::move(message), std::move(details), true};
  }
};

class Remedy {
 public:
  virtual ~Remedy() = default;
  virtual Risk risk() const = 0;
  // One line saying exactly what run() would do now (observe mode logs this instead).
  virtual std::string plan(const RemedyContext& ctx) const = 0;
  // Never throws for the failures it expects (they are outcomes); must honour
  // cancellation like checks do.
  virtual asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) = 0;
  // True when running it stops or restarts this node's PostgreSQL (the agent-check then
  // answers maint or drain); a chown or an etcd restart leaves sessions alone.
  virtual bool interrupts_postgres() const { return false; }
};

// Builds a remedy from its ladder step's YAML parameters (the `remedy:` key and the
// engine's keys already read). Validates everything here; must not do I/O.
using RemedyFactory = std::function<std::unique_ptr<Remedy>(YamlMap& params, const Config& config)>;

}  // namespace fener
