#include "src/config_reload.hpp"

#include <utility>

namespace fener {

namespace {

bool same_files(const TlsSettings& a, const TlsSettings& b) {
  return a.ca_file == b.ca_file && a.cert_file == b.cert_file && a.key_file == b.key_file &&
         a.verify_peer == b.verify_peer && a.verify_host == b.verify_host;
}

bool same_roots(const std::vector<PeerFileRoot>& a, const std::vector<PeerFileRoot>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].dir != b[i].dir || a[i].patterns != b[i].patterns)
      return false;
  return true;
}

}  // namespace

std::vector<std::string> hold_start_only_settings(Config& next, const Config& running) {
  std::vector<std::string> pending;
  // Read only at start: put the running value back and note the key.
  auto hold = [&pending](const char* key, auto& field, const auto& in_force, bool same) {
    if (same) return;
    pending.emplace_back(key);
    field = in_force;
  };
  hold("state_dir", next.state_dir, running.state_dir, next.state_dir == running.state_dir);
  hold("audit.file", next.audit_file, running.audit_file, next.audit_file == running.audit_file);
  hold("api.listen", next.api.listen, running.api.listen, next.api.listen == running.api.listen);
  if (next.api.token != running.api.token) {
    pending.emplace_back("api.token");
    next.api.token = running.api.token;
    next.api.token_source = running.api.token_source;
  }
  hold("api.max_file_size", next.api.max_file_size, running.api.max_file_size,
       next.api.max_file_size == running.api.max_file_size);
  hold("peer_files", next.peer_files, running.peer_files,
       same_roots(next.peer_files, running.peer_files));
  hold("agent.listen", next.agent.listen, running.agent.listen,
       next.agent.listen == running.agent.listen);
  hold("fleet.enabled", next.fleet.enabled, running.fleet.enabled,
       next.fleet.enabled == running.fleet.enabled);
  hold("fleet.interval", next.fleet.interval, running.fleet.interval,
       next.fleet.interval == running.fleet.interval);

  // Also read by the checks, which take the new value: listed, not held.
  auto note = [&pending](const char* key, bool same) {
    if (!same) pending.emplace_back(key);
  };
  note("node.name", next.node_name == running.node_name);
  note("cluster.scope", next.scope == running.scope);
  note("etcd.endpoints", next.etcd_endpoints == running.etcd_endpoints);
  note("etcd TLS (cacert, cert, key, verify)", same_files(next.etcd_tls, running.etcd_tls));
  note("Patroni's DCS (etcd or etcd3)", next.patroni_dcs == running.patroni_dcs);
  return pending;
}

}  // namespace fener
