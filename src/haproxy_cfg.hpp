// A small reader of haproxy.cfg for what fener needs on the HAProxy node: where the stats
// socket is, and which listen/backend sections route to the Patroni primary or to its
// replicas (told by agent-send "primary"/"replica" or by the Patroni health-check path).
// Everything else in the file is skipped; it is not a validator.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fener {

enum class BackendRole { unknown, primary, replica };
std::string_view to_string(BackendRole r);

struct HaproxyCfgServer {
  std::string name;
  std::string address;  // as written, e.g. 10.0.0.2:5432
  int line = 0;
};

struct HaproxyCfgSection {
  std::string kind;  // "listen" or "backend"
  std::string name;
  int line = 0;
  BackendRole role = BackendRole::unknown;
  std::string role_reason;  // e.g. `agent-send "primary\n"` or `option httpchk OPTIONS /replica`
  std::vector<HaproxyCfgServer> servers;
};

struct HaproxyCfg {
  // First `stats socket` of the global section, as HAProxy names it: a path, unix@PATH,
  // ipv4@ADDR:PORT or ADDR:PORT. "" when there is none.
  std::string stats_socket;
  std::vector<HaproxyCfgSection> sections;  // listen and backend sections, in file order

  std::vector<std::string> backends_with(BackendRole r) const;
};

// One line split into words the way HAProxy does: blanks separate, "..." and '...' quote
// (backslash escapes such as \n inside double quotes are decoded), # starts a comment.
std::vector<std::string> haproxy_cfg_words(std::string_view line);

// The role a Patroni health-check path stands for: /primary, /master, /leader,
// /read-write -> primary; /replica, /read-only (also with ?query) -> replica.
BackendRole role_of_patroni_path(std::string_view path);

// Never throws: an unreadable construct is skipped.
HaproxyCfg parse_haproxy_cfg(std::string_view text);

// The stats socket address in fener's form: a unix path, or IP:PORT for TCP ("unix@",
// "ipv4@" and "ipv6@" prefixes removed). "" when it is neither.
std::string normalize_stats_socket(const std::string& s);
// True when s (normalized) is a TCP address rather than a unix socket path.
bool stats_socket_is_tcp(const std::string& s);

}  // namespace fener
