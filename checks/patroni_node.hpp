// patroni_node: GET <patroni_url>/patroni on this node (and, for a replica, GET /cluster for
// its lag), then judge this node's PostgreSQL as Patroni sees it.
//   passing   state `running`, a known role; a replica streams (when Patroni says) and lags
//             no more than lag_warning; no pending restart; the cluster is not paused.
//   warning   a transitional or unrecognised state (starting, restarting, creating replica,
//             ...); role demoted/promoted/uninitialized or unrecognised; a replica not
//             streaming, lagging over lag_warning or with lag "unknown" or not found;
//             pending_restart; pause (maintenance mode).
//   critical  a failed state (start failed, crashed, stopped, ..., or `unknown`, which
//             Patroni reports when PostgreSQL no longer answers); a replica lagging over
//             lag_critical; the REST API refused the connection (Patroni not running).
//   unknown   the REST API could not be asked: timeout, name not resolved, cancelled, an
//             HTTP status other than 200/503, a body that is not JSON or not a /patroni
//             document. Never grounds for a remedy.
// Patroni 3.0.x (role `master`) and 4.x (role `primary`, `patroni.name`) are both read.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

inline constexpr std::int64_t kDefaultLagWarning = std::int64_t{16} << 20;    // 16MB
inline constexpr std::int64_t kDefaultLagCritical = std::int64_t{128} << 20;  // 128MB

// "16MB", "1GB", "512kB", "0" or "1048576" (bytes). PostgreSQL units kB/MB/GB/TB, 1024-based;
// "B" and any letter case accepted. nullopt on anything else, negatives and overflow.
std::optional<std::int64_t> parse_size(std::string_view text);
// 0 -> "0 B", 1536 -> "1.5 kB", 16777216 -> "16 MB" (same units as parse_size).
std::string format_size(std::int64_t bytes);

// Reads a size parameter (string or integer scalar); nullopt when absent, ConfigError
// when malformed.
std::optional<std::int64_t> read_size_param(YamlMap& params, const std::string& key);

// http://host:port without trailing slashes; ConfigError (on key) unless http(s).
std::string read_patroni_url(YamlMap& params, const std::string& key, std::string url);

// Non-throwing readers of Patroni JSON (shared with patroni_cluster): nullptr/nullopt/false
// when obj is not an object, lacks the key, or holds another type there.
const json* patroni_field(const json& obj, const char* key);
std::optional<std::string> patroni_str(const json& obj, const char* key);
std::optional<std::int64_t> patroni_int(const json& obj, const char* key);
bool patroni_flag(const json& obj, const char* key);  // true only for JSON true
json patroni_copy(const json& obj, const char* key);  // the value, or null

// A one-line printable excerpt of a body (control and non-ASCII bytes replaced), safe to
// put in evidence: evidence is serialised later and must be valid UTF-8.
std::string body_excerpt(const std::string& body, std::size_t n = 80);

// Why an answer is not the expected document: "URL connection refused", "URL answered
// HTTP 404: '...'", "URL answered non-JSON: '...'", "URL answered a JSON array, not ...".
std::string describe_unusable_answer(const HttpResult& r, const std::string& url,
                                     const char* expected);

// Findings of one run with their severity: the status is the worst, the message lists
// them worst first, joined by "; ".
class PatroniFindings {
 public:
  void add(Status s, std::string text);
  Status status() const;  // passing when empty
  std::string text() const;
  bool empty() const { return items_.empty(); }

 private:
  std::vector<std::pair<Status, std::string>> items_;
};

// What a /cluster member entry says about replication lag: bytes, "unknown" or absent.
struct PatroniLag {
  enum class Kind { absent, bytes, unknown } kind = Kind::absent;
  std::int64_t bytes = 0;
};
// Reads `lag` (3.x and 4.x), else 4.x's `replay_lag`, else `receive_lag`. Never throws.
PatroniLag patroni_member_lag(const json& member);
json to_json(const PatroniLag& lag);

// Patroni's PostgreSQL states, by what they mean for a health check.
enum class PatroniStateKind { running, transitional, failed, unrecognised };
PatroniStateKind classify_patroni_state(std::string_view state);

struct PatroniNodeParams {
  std::string url;     // Patroni REST base URL, e.g. http://127.0.1.2:8008
  std::string member;  // this node's Patroni name, to find its lag in /cluster; "" = unknown
  std::int64_t lag_warning = kDefaultLagWarning;
  std::int64_t lag_critical = kDefaultLagCritical;
};

// True when the /patroni answer is from a replica with a full body, so its lag is worth
// fetching from /cluster.
bool patroni_node_wants_cluster(const HttpResult& patroni);

// Judges GET /patroni and, for a replica, GET /cluster (nullopt when not fetched). Pure,
// never throws whatever the bodies.
CheckResult evaluate_patroni_node(const HttpResult& patroni,
                                  const std::optional<HttpResult>& cluster,
                                  const PatroniNodeParams& p);

// Params: url (default config.patroni_url), member (default config.node_name unless url is
// given), lag_warning (16MB), lag_critical (128MB).
std::unique_ptr<Check> make_patroni_node_check(YamlMap& params, const Config& config);

}  // namespace fener
