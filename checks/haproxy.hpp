// haproxy: does HAProxy route writes to the Patroni leader and reads to the replicas?
// Sends `show servers state` to HAProxy's stats socket (a unix socket path, or IP:PORT)
// and reads Patroni's leader and members from etcd (v2 GET /v2/keys/service/SCOPE/,
// quorum read, the next endpoint on failure). Servers map to members by name, else by
// address (the host of the member's conn_url).
// A server "serves" when it is UP (op state running or starting), not in MAINT, not in
// DRAIN and its weight is not 0.
//   passing   every primary backend has exactly one serving server and it is the leader;
//             every replica backend serves every healthy replica (running or streaming,
//             not tagged noloadbalance).
//   warning   a replica backend serves nothing, or a healthy replica is missing from it;
//             a server is in MAINT or DRAIN (by whom, when the admin state tells: the
//             stats socket or agent, the configuration, a tracked server, DNS).
//   critical  a primary backend serves no server, or more than one, or one that is not
//             the leader (writes would go to a replica); a configured backend is missing
//             from HAProxy; HAProxy is not running: its socket refuses connections or
//             does not exist (evidence "socket": "refused" or "missing").
//   unknown   the socket timed out or answered something that is not a servers state;
//             the leader could not be learnt (etcd unreachable, no leader key, or the
//             scope is unknown): then only the leader-independent critical findings
//             (no server or several serving a primary backend) are reported; never a guess.
// Which backends are primary or replica: the params primary_backends/replica_backends,
// else what haproxy.cfg says (agent-send "primary"/"replica", or the Patroni check path:
// /primary|/master|/leader|/read-write vs /replica|/read-only). Scope: cluster.scope or
// patroni.yml's, else the only directory under /v2/keys/service/ in etcd.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/haproxy_cfg.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

// One row of `show servers state` (format version 1).
struct HaproxyServerState {
  std::string backend;
  std::string name;
  std::string address;
  int port = 0;
  int op_state = 0;     // 0 stopped (DOWN), 1 starting, 2 running (UP), 3 stopping
  int admin_state = 0;  // bit set: 0x01 forced MAINT, 0x02 inherited MAINT, 0x04 config
                        // MAINT, 0x08 forced DRAIN, 0x10 inherited DRAIN, 0x20 DNS MAINT,
                        // 0x40 hostname MAINT
  int weight = 1;       // srv_uweight (0 = drained by weight, e.g. the agent's 0%)

  bool up() const { return op_state == 1 || op_state == 2; }
  bool maint() const { return (admin_state & 0x67) != 0; }
  bool drain() const { return (admin_state & 0x18) != 0 || weight == 0; }
  bool serving() const { return up() && !maint() && !drain(); }
};

struct HaproxyStateParse {
  std::vector<HaproxyServerState> servers;
  std::string error;  // "" when parsed
};

// Parses the whole answer to `show servers state`: version line "1", then a "# be_id
// be_name ..." header naming the columns, then one line per server. Columns are found
// by name. Never throws.
HaproxyStateParse parse_servers_state(std::string_view text);

// "MAINT (forced: stats socket or agent)", "DRAIN (weight 0)", ... "" when neither.
std::string haproxy_admin_phrase(const HaproxyServerState& s);

// A Patroni member as the DCS describes it.
struct PatroniMemberInfo {
  std::string name;
  std::string host;   // of conn_url
  std::string role;   // master/primary/replica/standby_leader...
  std::string state;  // running, streaming, starting, ...
  bool noloadbalance = false;
};

// Members from read_dcs_tree's evidence["members"] (name -> member JSON).
std::vector<PatroniMemberInfo> patroni_members_from_dcs(const json& members);

struct HaproxyJudgeInput {
  std::vector<HaproxyServerState> servers;
  std::vector<std::string> primary_backends;
  std::vector<std::string> replica_backends;
  std::optional<std::string> leader;  // nullopt: not learnt
  std::string leader_unknown_reason;  // why, for the message
  std::vector<PatroniMemberInfo> members;
  std::string socket;  // for messages
};

// Pure judgement of what HAProxy answered against the leader and members.
CheckResult judge_haproxy(const HaproxyJudgeInput& in);

// Answer of one stats socket command.
struct StatsSocketAnswer {
  enum class Error { none, missing, refused, timeout, too_large, other };
  Error error = Error::none;
  std::string text;
  std::string error_text;
};
std::string_view to_string(StatsSocketAnswer::Error e);

// Connects to socket (unix path or IP:PORT), sends command and a newline, reads until
// HAProxy closes the connection. Bounded by timeout and max_bytes; never throws.
asio::awaitable<StatsSocketAnswer> stats_socket_command(std::string socket, std::string command,
                                                        Duration timeout,
                                                        std::size_t max_bytes = 4 << 20);

std::unique_ptr<Check> make_haproxy_check(YamlMap& params, const Config& config);

}  // namespace fener
