#include "checks/registry.hpp"

#include "checks/config_lint.hpp"
#include "checks/datadir.hpp"
#include "checks/etcd_health.hpp"
#include "checks/etcd_members.hpp"
#include "checks/haproxy.hpp"
#include "checks/leader_files.hpp"
#include "checks/listening_sockets.hpp"
#include "checks/patroni_cluster.hpp"
#include "checks/patroni_node.hpp"

namespace fener {

const std::vector<CheckType>& check_types() {
  static const std::vector<CheckType> types = {
      {"etcd_health", make_etcd_health_check, "GET /health of every etcd member; quorum"},
      {"etcd_members", make_etcd_members_check,
       "etcd membership (v2, or v3 gateway) against what is expected; leader known"},
      {"patroni_node", make_patroni_node_check,
       "this node's Patroni: PostgreSQL state, role, lag, pending restart"},
      {"patroni_cluster", make_patroni_cluster_check,
       "the Patroni cluster: one running leader, healthy replicas, lag"},
      {"listening_sockets", make_listening_sockets_check,
       "etcd, PostgreSQL and Patroni listen where they should (as ss -tlpn)"},
      {"datadir", make_datadir_check, "owner and modes of the PostgreSQL data directory"},
      {"leader_files", make_leader_files_check,
       "this node's allow-listed peer files (e.g. .*.swp) against the leader's"},
      {"config_lint", make_config_lint_check,
       "patroni.yml and etcd environment files against the setup guide's rules; TLS "
       "certificates (readable, valid, not ending soon, key matching)"},
      {"haproxy", make_haproxy_check,
       "HAProxy's servers state: writes routed to the Patroni leader only, reads to replicas"},
  };
  return types;
}

const CheckType* find_check_type(const std::string& name) {
  for (const auto& t : check_types())
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<BuiltCheck> build_checks(const Config& config) {
  std::vector<BuiltCheck> out;
  for (const auto& spec : config.checks) {
    YamlMap params(spec.params, spec.file, spec.path);
    const CheckType* type = find_check_type(spec.type);
    if (!type) {
      std::string known;
      for (const auto& t : check_types()) known += (known.empty() ? "" : ", ") + t.name;
      if (params.has("type"))
        params.fail("type", "unknown check type \"" + spec.type + "\"; expected one of: " + known);
      params.fail_here("unknown check \"" + spec.name +
                       "\"; name a known type or add `type:` (one of: " + known + ")");
    }
    // The common keys were validated by load_config; mark them read for finish().
    CheckTiming ignored;
    read_check_timing(params, ignored);
    params.str("type");
    params.boolean("enabled");
    BuiltCheck b;
    b.spec = spec;
    b.check = type->make(params, config);
    params.finish();
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace fener
