#include "src/guards.hpp"

namespace fener {

namespace {

GuardVerdict not_paused(const ClusterFacts& f, bool patroni_here) {
  if (!f.paused) {
    if (!patroni_here && !f.leader_name)
      return {"not_paused", true, "no Patroni cluster known to this node"};
    return {"not_paused", false, "cannot tell whether the cluster is paused"};
  }
  if (*f.paused) return {"not_paused", false, "the cluster is paused (maintenance mode)"};
  return {"not_paused", true, "not paused"};
}

GuardVerdict etcd_quorum(const ClusterFacts& f) {
  if (!f.etcd_quorum) return {"etcd_quorum", false, "no etcd member answered a quorum read"};
  if (!*f.etcd_quorum) return {"etcd_quorum", false, "etcd has no quorum"};
  return {"etcd_quorum", true, "etcd answered a quorum read"};
}

GuardVerdict not_leader(const ClusterFacts& f) {
  if (f.self_role && is_leader_role(*f.self_role))
    return {"not_leader", false, "Patroni reports this node as " + *f.self_role};
  if (!f.leader_name) return {"not_leader", false, "the leader key could not be read"};
  if (*f.leader_name == f.self_name || f.self_holds_leader_key.value_or(false))
    return {"not_leader", false, "this node holds the leader key"};
  return {"not_leader", true, "leader is " + *f.leader_name};
}

GuardVerdict leader_running(const ClusterFacts& f) {
  if (!f.leader_name) return {"leader_running", false, "the cluster has no leader"};
  if (!f.leader_state)
    return {"leader_running", false, "leader " + *f.leader_name + " did not answer"};
  if (*f.leader_state != "running")
    return {"leader_running", false,
            "leader " + *f.leader_name + " is " + *f.leader_state + ", not running"};
  return {"leader_running", true, "leader " + *f.leader_name + " is running"};
}

GuardVerdict same_system(const ClusterFacts& f) {
  if (!f.cluster_sysid) return {"same_system", false, "the cluster's system identifier is unknown"};
  if (!f.leader_sysid) return {"same_system", false, "the leader's system identifier is unknown"};
  if (*f.leader_sysid != *f.cluster_sysid)
    return {"same_system", false,
            "leader system " + *f.leader_sysid + " is not the cluster's " + *f.cluster_sysid};
  if (f.self_sysid && *f.self_sysid != *f.cluster_sysid)
    return {"same_system", false,
            "this node's system " + *f.self_sysid + " is not the cluster's " + *f.cluster_sysid};
  return {"same_system", true, "system " + *f.cluster_sysid};
}

GuardVerdict replica_only(const ClusterFacts& f) {
  GuardVerdict v = not_leader(f);
  v.name = "replica_only";
  return v;
}

}  // namespace

bool is_leader_role(const std::string& role) {
  return role == "master" || role == "primary" || role == "leader" || role == "standby_leader";
}

std::vector<GuardVerdict> evaluate_guards(const ClusterFacts& facts, Risk risk, bool patroni_here,
                                          const std::vector<std::string>& extra) {
  std::vector<GuardVerdict> out;
  out.push_back(not_paused(facts, patroni_here));
  if (risk != Risk::safe) out.push_back(etcd_quorum(facts));
  if (risk == Risk::destructive) {
    out.push_back(not_leader(facts));
    out.push_back(leader_running(facts));
    out.push_back(same_system(facts));
  }
  for (const auto& name : extra) {
    bool present = false;
    for (const auto& v : out) present = present || v.name == name;
    if (present) continue;
    if (name == "replica_only") out.push_back(replica_only(facts));
    if (name == "leader_running") out.push_back(leader_running(facts));
  }
  return out;
}

bool all_pass(const std::vector<GuardVerdict>& verdicts) {
  for (const auto& v : verdicts)
    if (!v.pass) return false;
  return true;
}

std::string first_failure(const std::vector<GuardVerdict>& verdicts) {
  for (const auto& v : verdicts)
    if (!v.pass) return v.name + ": " + v.reason;
  return "";
}

nlohmann::json to_json(const std::vector<GuardVerdict>& verdicts) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& v : verdicts)
    j.push_back({{"guard", v.name}, {"pass", v.pass}, {"reason", v.reason}});
  return j;
}

bool is_rule_guard(const std::string& name) {
  return name == "replica_only" || name == "leader_running";
}

std::string rule_guard_names() {
  return "replica_only, leader_running";
}

}  // namespace fener
