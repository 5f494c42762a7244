// patroni_cluster: GET <url>/cluster from the first Patroni REST API that answers (the
// `urls:` in order), then judge the whole cluster as the DCS describes it.
//   passing   exactly one leader (role leader or standby_leader), state running; every
//             replica (replica, sync_standby, quorum_standby) running or streaming, on the
//             leader's timeline, lagging no more than lag_warning; at least `members`
//             members; not paused, no scheduled switchover, no pending restart.
//   warning   a replica in another state (named with its state), on another timeline,
//             lagging over lag_warning or with lag "unknown"; fewer members than expected;
//             a member with an unrecognised role; pause (maintenance mode); a scheduled
//             switchover; any member with pending_restart.
//   critical  no leader; more than one leader; the leader not running; a replica lagging
//             over lag_critical.
//   unknown   no URL gave a /cluster document: each refused, timed out or answered
//             garbage (the message says which URL and why). Never grounds for a remedy.
// Reads Patroni 3.0.x (replicas `running` before 3.0.4, `streaming` after; lag in bytes or
// "unknown") and 4.x (quorum_standby, receive_lag/replay_lag/lsn).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checks/patroni_node.hpp"
#include "src/check.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct PatroniClusterParams {
  std::vector<std::string> urls;  // Patroni REST base URLs, tried in order
  int expected_members = 0;       // 0 = don't check
  std::int64_t lag_warning = kDefaultLagWarning;
  std::int64_t lag_critical = kDefaultLagCritical;
  std::string scope;  // for messages when the body does not say (3.x)
};

// One GET /cluster: url is the full URL asked.
struct PatroniClusterAttempt {
  std::string url;
  HttpResult result;
};

// True when r is a /cluster document worth judging (200/503, an object whose `members` is
// an array of objects with a string `name`); otherwise the next URL is tried.
bool patroni_cluster_usable(const HttpResult& r);

// Judges the first usable attempt; unknown, naming every URL and why, when none is.
// Pure, never throws whatever the bodies.
CheckResult evaluate_patroni_cluster(const std::vector<PatroniClusterAttempt>& attempts,
                                     const PatroniClusterParams& p);

// Judges one /cluster document (as patroni_cluster_usable accepts). Never throws.
CheckResult judge_patroni_cluster(const json& cluster, const PatroniClusterParams& p);

// Params: urls (list or "a,b"; default [config.patroni_url]), members (default
// config.expected_members), lag_warning (16MB), lag_critical (128MB).
std::unique_ptr<Check> make_patroni_cluster_check(YamlMap& params, const Config& config);

}  // namespace fener
