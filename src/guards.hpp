// Safety guards: conditions on the cluster, checked on fresh facts just before a remedy
// runs. The ones bound to a remedy's risk cannot be switched off by any configuration;
// a rule may only add more. A fact that could not be learnt fails its guard: acting on
// a guess is what a watchdog must never do.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "remedies/remedy.hpp"

namespace fener {

struct GuardVerdict {
  std::string name;
  bool pass = false;
  std::string reason;
};

// Always applied, by risk:
//   every remedy   not_paused     the Patroni cluster is not in maintenance mode
//   disruptive+    etcd_quorum    etcd answered a quorum read (the lock needs it too)
//   destructive    not_leader     this node is not the leader, holds no leader key and
//                                 Patroni does not report it as master/primary
//                  leader_running a leader exists and its PostgreSQL is running
//                  same_system    the leader's system identifier equals the cluster's
//                                 (the DCS `initialize` key), and this node's when known
// Optional, named in a rule's `guards:`: replica_only, leader_running.
std::vector<GuardVerdict> evaluate_guards(const ClusterFacts& facts, Risk risk, bool patroni_here,
                                          const std::vector<std::string>& extra);

bool all_pass(const std::vector<GuardVerdict>& verdicts);
// The first failing guard as "name: reason", or "" when all pass.
std::string first_failure(const std::vector<GuardVerdict>& verdicts);
nlohmann::json to_json(const std::vector<GuardVerdict>& verdicts);

bool is_rule_guard(const std::string& name);
std::string rule_guard_names();

// Patroni's names for a leader's role, old and new.
bool is_leader_role(const std::string& role);

}  // namespace fener
