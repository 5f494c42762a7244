#include "remedies/registry.hpp"

#include "remedies/copy_from_leader.hpp"
#include "remedies/fix_permissions.hpp"
#include "remedies/patroni_reinit.hpp"
#include "remedies/patroni_restart.hpp"
#include "remedies/service_restart.hpp"

namespace fener {

std::string_view to_string(Risk r) {
  switch (r) {
    case Risk::safe:
      return "safe";
    case Risk::disruptive:
      return "disruptive";
    case Risk::destructive:
      return "destructive";
  }
  return "?";
}

const std::vector<RemedyType>& remedy_types() {
  static const std::vector<RemedyType> types = {
      {"fix_permissions", make_fix_permissions_remedy,
       "chown/chmod the data directory tree to PostgreSQL's rules (safe)"},
      {"copy_from_leader", make_copy_from_leader_remedy,
       "copy allow-listed files missing here from the leader's fener (safe)"},
      {"service_restart", make_service_restart_remedy,
       "restart a service: systemd over D-Bus, or a configured command (disruptive)"},
      {"patroni_restart", make_patroni_restart_remedy,
       "POST /restart: Patroni (re)starts PostgreSQL (disruptive)"},
      {"patroni_reinit", make_patroni_reinit_remedy,
       "POST /reinitialize: rebuild a replica from the leader (destructive, mode full)"},
  };
  return types;
}

const RemedyType* find_remedy_type(const std::string& name) {
  for (const auto& t : remedy_types())
    if (t.name == name) return &t;
  return nullptr;
}

std::string remedy_names() {
  std::string out;
  for (const auto& t : remedy_types()) out += (out.empty() ? "" : ", ") + t.name;
  return out;
}

}  // namespace fener
