#include "src/config_reload.hpp"

#include <utility>

#include "src/config_error.hpp"
#include "src/join.hpp"

namespace fener {

namespace {

template <class T>
bool same(const T& a, const T& b) {
  return a == b;
}

// The files and switches, not where they were named.
bool same(const TlsSettings& a, const TlsSettings& b) {
  return a.ca_file == b.ca_file && a.cert_file == b.cert_file && a.key_file == b.key_file &&
         a.verify_peer == b.verify_peer && a.verify_host == b.verify_host;
}

bool same(const std::vector<PeerFileRoot>& a, const std::vector<PeerFileRoot>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].dir != b[i].dir || a[i].patterns != b[i].patterns)
      return false;
  return true;
}

// Whether a daemon started on `c` would run the etcd leader watch or the fleet publisher
// (as Daemon::start_leader_watch and start_fleet decide).
bool would_watch_etcd(const Config& c) {
  if (c.scope.empty() || c.etcd_endpoints.empty()) return false;
  return c.fleet.enabled || c.patroni_dcs.empty() || c.patroni_dcs == "etcd";
}

}  // namespace

std::vector<std::string> PendingRestart::all() const {
  std::vector<std::string> out = held;
  out.insert(out.end(), partly.begin(), partly.end());
  return out;
}

PendingRestart hold_start_only_settings(Config& next, const Config& running, bool etcd_watchers) {
  PendingRestart pending;
  auto hold = [&pending](const char* key, auto& field, const auto& in_force) {
    if (same(field, in_force)) return;
    pending.held.emplace_back(key);
    field = in_force;
  };
  hold("node.name", next.node_name, running.node_name);
  hold("state_dir", next.state_dir, running.state_dir);
  hold("audit.file", next.audit_file, running.audit_file);
  hold("api.listen", next.api.listen, running.api.listen);
  if (next.api.token != running.api.token) {
    hold("api.token", next.api.token, running.api.token);
    next.api.token_source = running.api.token_source;
  }
  hold("api.max_file_size", next.api.max_file_size, running.api.max_file_size);
  hold("peer_files", next.peer_files, running.peer_files);
  hold("agent.listen", next.agent.listen, running.agent.listen);
  hold("fleet.enabled", next.fleet.enabled, running.fleet.enabled);
  hold("fleet.interval", next.fleet.interval, running.fleet.interval);

  // Also read by the checks, which take the new value: listed, not held.
  auto note = [&pending](const char* key, const auto& now, const auto& before) {
    if (!same(now, before)) pending.partly.emplace_back(key);
  };
  if (etcd_watchers || would_watch_etcd(next)) {
    note("cluster.scope", next.scope, running.scope);
    note("etcd.endpoints", next.etcd_endpoints, running.etcd_endpoints);
    note("etcd.cacert/cert/key/verify", next.etcd_tls, running.etcd_tls);
    note("patroni.yml etcd/etcd3", next.patroni_dcs, running.patroni_dcs);
  }
  return pending;
}

Reloaded prepare_reload(const Config& written, const Config& running, bool etcd_watchers) {
  Reloaded out;
  Config next = written;
  out.pending = hold_start_only_settings(next, running, etcd_watchers);
  if (!out.pending.held.empty()) {
    build_checks(written);
    build_rules(written);
  }
  out.config = std::make_shared<const Config>(std::move(next));
  try {
    out.checks = build_checks(*out.config);
    out.rules = build_rules(*out.config);
  } catch (const ConfigError& e) {
    if (out.pending.held.empty()) throw;  // the file's own fault: a restart would not help
    throw ConfigError(e.file(), e.line(), e.column(), e.key(),
                      e.problem() + " (with " + join(out.pending.held) +
                          " as running until a restart: restart fener to take this file up)");
  }
  return out;
}

}  // namespace fener
