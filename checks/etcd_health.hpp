// etcd_health: GET <endpoint>/health on every etcd member at once, then judge quorum.
// N = number of endpoints, quorum = N/2+1.
//   passing   all N members answer healthy.
//   warning   at least a quorum is healthy, but some member is unhealthy, down, unreachable
//             or answered garbage.
//   critical  quorum is lost for certain: even if every member that could not be checked
//             were healthy, fewer than a quorum would be (healthy + unreachable < quorum).
//   unknown   quorum may be lost but it cannot be told: too many members timed out,
//             failed otherwise or answered something that is not an etcd health document.
// Member states: healthy (200, "health":"true"); unhealthy (answered 503 and/or
// "health":"false", 3.5 adds a reason such as RAFT NO LEADER); down (connection refused:
// a definite answer); unreachable (timeout or other transport failure); garbage (answered
// non-JSON or a wrong shape; counted like unreachable).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

enum class EtcdMemberState { healthy, unhealthy, down, unreachable, garbage };

std::string_view to_string(EtcdMemberState s);

struct EtcdMemberHealth {
  std::string endpoint;
  std::string name;  // "" when the endpoint matches no known member
  EtcdMemberState state = EtcdMemberState::unreachable;
  std::string reason;    // why it is not healthy, "" when healthy
  long http_status = 0;  // 0 when nothing answered
  std::chrono::milliseconds elapsed{0};
};

// Majority of n voting members.
constexpr int etcd_quorum(int n) {
  return n / 2 + 1;
}

// Name of the member whose client URLs point at endpoint: same URL, else same host and
// port, else the only member on that host. "" when none matches.
std::string etcd_member_name(const std::string& endpoint, const std::vector<EtcdMember>& members);

// "kaptan1 (http://127.0.1.2:2379)" when the name is known, else the URL.
std::string etcd_member_label(const std::string& name, const std::string& endpoint);

// Endpoint URL without trailing slashes, so paths can be appended.
std::string etcd_trim_url(std::string url);

// Classifies one /health answer. Never throws, whatever the body.
EtcdMemberHealth classify_etcd_health(const std::string& endpoint, const HttpResult& r,
                                      const std::vector<EtcdMember>& members = {});

// Judges the classified members (one per endpoint).
CheckResult judge_etcd_health(const std::vector<EtcdMemberHealth>& members);

// classify + judge: results[i] is the answer of endpoints[i]; a missing result counts as
// unreachable.
CheckResult evaluate_etcd_health(const std::vector<std::string>& endpoints,
                                 const std::vector<HttpResult>& results,
                                 const std::vector<EtcdMember>& members);

// The `endpoints:` parameter (list or "a,b" string of http(s) URLs), else
// config.etcd_endpoints. Throws ConfigError when the result is empty or malformed.
std::vector<std::string> read_etcd_endpoints(YamlMap& params, const Config& config);

std::unique_ptr<Check> make_etcd_health_check(YamlMap& params, const Config& config);

}  // namespace fener
