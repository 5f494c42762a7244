// etcd_members: the cluster's member list and leader, compared with the expected
// membership (config.etcd_members, or the `expect:` parameter; empty = structure only).
// Asks every endpoint GET /v2/members and /v2/members/leader at once and uses the first
// endpoint in order that answers; where v2 answers 404 (disabled) it falls back to the v3
// gateway (POST /v3/cluster/member/list and /v3/maintenance/status).
//   passing   every expected member is there with its peer URLs, nothing else is, and
//             there is a leader.
//   warning   an unexpected member; a name that differs from the expected one or is empty
//             (added, not started); client URLs differ or are empty; a port other than
//             2379 (client) / 2380 (peer); a learner; two members with one name.
//   critical  an expected member is missing; peer URLs differ from the expected ones; no
//             leader; the v2 API is disabled while Patroni's `etcd:` section needs it.
//   unknown   no endpoint answered a usable member list (each one's reason is given), or
//             the leader could not be read.
// Status is the worst finding; the message names it and counts the rest.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

// One member as the cluster reports it.
struct EtcdMemberInfo {
  std::string id;    // as the API gives it: hex (v2) or decimal (v3)
  std::string name;  // empty while a member is added but not started
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool learner = false;
};

// A parsed member list, or why an answer is unusable.
struct EtcdMemberList {
  bool ok = false;
  std::vector<EtcdMemberInfo> members;
  std::string problem;  // set when !ok: "connection refused", "HTTP 200, not JSON: ..."
};

struct EtcdLeader {
  enum class State { known, none, unknown };
  State state = State::unknown;
  std::string id;
  std::string name;    // "" when not known
  std::string detail;  // why none / unknown
};

struct EtcdFinding {
  Status status = Status::warning;
  std::string message;
};

// What one endpoint said. v3 answers are asked only where v2 answered 404.
struct EtcdMembersAnswer {
  std::string endpoint;
  HttpResult v2_members;                 // GET /v2/members
  HttpResult v2_leader;                  // GET /v2/members/leader
  std::optional<HttpResult> v3_members;  // POST /v3/cluster/member/list {}
  std::optional<HttpResult> v3_status;   // POST /v3/maintenance/status {}
};

// The answers below never throw, whatever the body.
EtcdMemberList parse_etcd_v2_members(const HttpResult& r);
EtcdMemberList parse_etcd_v3_members(const HttpResult& r);
EtcdLeader parse_etcd_v2_leader(const HttpResult& r);
// members (from the v3 list) give the leader's name.
EtcdLeader parse_etcd_v3_status(const HttpResult& r, const std::vector<EtcdMemberInfo>& members);

// etcd serves /v2/* only with --enable-v2; without it the path is 404.
bool etcd_v2_disabled(const HttpResult& v2_members);

// Membership findings (no leader, no API): expected vs actual, and structural ones.
std::vector<EtcdFinding> compare_etcd_members(const std::vector<EtcdMemberInfo>& actual,
                                              const std::vector<EtcdMember>& expected);

// The whole judgement. patroni_needs_v2: Patroni uses the `etcd:` (v2) section.
CheckResult judge_etcd_members(const std::vector<EtcdMembersAnswer>& answers,
                               const std::vector<EtcdMember>& expected, bool patroni_needs_v2);

std::unique_ptr<Check> make_etcd_members_check(YamlMap& params, const Config& config);

}  // namespace fener
