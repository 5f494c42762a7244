// Check "listening_sockets": etcd, PostgreSQL and Patroni accept TCP connections where the
// cluster expects them (the guide's `ss -tlpn | grep etcd` and `grep postgres`), read from
// /proc/net/tcp{,6} with owners from /proc/<pid>/fd.
//   passing  - every expected listener exists, on its address or on a wildcard address
//              (0.0.0.0 for IPv4, :: for any) at its port.
//   warning  - all exist, but one is owned by a process other than the expected one
//              (another program holds the port). A listener whose owner could not be
//              read (permissions) is not judged.
//   critical - an expected listener is missing.
//   unknown  - /proc/net/tcp and /proc/net/tcp6 could not be read, or a listener is
//              missing while one of them existed but could not be read.
// Params: `expect:` a list of {name, address (default: the node address), port,
// process (a name or a list of names)}. Without it, derived from the config: etcd client
// and peer ports, PostgreSQL, Patroni's REST API.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/procnet.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct ExpectedListener {
  std::string name;     // label for messages, e.g. "postgresql"
  std::string address;  // IP literal; "" = any address (node address unknown)
  int port = 0;
  std::vector<std::string> processes;  // acceptable owner comm names; empty = any
};

// What this node should listen on, from the config alone (no I/O). etcd when this node is
// an etcd member (by name, or its address in a member's or an endpoint's URL; or it has
// endpoints and its address is unknown); PostgreSQL when a data dir or Patroni is
// configured; Patroni's REST port when Patroni is. Addresses are the node address.
std::vector<ExpectedListener> default_expected_listeners(const Config& config);

// Throws ConfigError for bad `expect` entries; defaults when `expect` is absent. No I/O;
// does not call params.finish().
std::vector<ExpectedListener> parse_listening_sockets_params(YamlMap& params, const Config& config);

// Pure: judges a scan against the expectations.
CheckResult evaluate_listening_sockets(const std::vector<ExpectedListener>& expected,
                                       const ListenScan& scan);

// "127.0.1.3:5432", "[::1]:5432", "*:5432" (any address).
std::string format_endpoint(const std::string& address, int port);

std::unique_ptr<Check> make_listening_sockets_check(YamlMap& params, const Config& config);

}  // namespace fener
