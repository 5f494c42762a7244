// fener's effective configuration: the fener YAML file, over what discovery found in
// patroni.yml and the etcd environment files, over built-in defaults.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "src/result.hpp"
#include "src/tls.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct EtcdMember {
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
};

// How far remedies may go. observe: check and announce, change nothing (each would-be
// action is logged as such); safe: non-destructive remedies (the default); full: also
// destructive ones (reinit).
enum class Mode { observe, safe, full };
std::string_view to_string(Mode m);
std::optional<Mode> mode_from_string(std::string_view s);

// One directory whose matching files this node serves to its peers (copy_from_leader).
struct PeerFileRoot {
  std::string name;                   // the name peers use in URLs ("data_dir")
  std::string dir;                    // absolute path
  std::vector<std::string> patterns;  // fnmatch(3) patterns on file names, e.g. ".*.swp"
};

// fener's own HTTP API: the peer file API now, status and metrics later.
struct ApiConfig {
  std::string listen;        // host:port; "" when switched off
  std::string token;         // shared secret for peer endpoints; "" disables them
  std::string token_source;  // where the token came from, for messages (never the token)
  // The largest peer file served or fetched (api.max_file_size): bigger ones are refused
  // with 413 before a byte is read, and never copied.
  std::size_t max_file_size = std::size_t{64} << 20;  // 64 MiB
};

// The HAProxy agent-check listener (see src/agent_policy.hpp for the answers).
struct AgentConfig {
  std::string listen;                    // host:port; "" when off (default NODE:8010 with Patroni)
  std::string default_role = "primary";  // for clients that send no agent-send line
  std::int64_t lag_drain = std::int64_t{16} << 20;
  std::int64_t lag_ready = std::int64_t{4} << 20;
  bool maint_during_remedy = true;  // during_remedy: maint (default) or drain
  std::int64_t max_connections = 1024;
  Duration read_wait{std::chrono::milliseconds(200)};
};

// The fleet view: each daemon publishes a summary of its checks to etcd (v2 keys under
// /fener/SCOPE/nodes/NODE) so that `fener status --cluster` shows every node at once.
struct FleetConfig {
  bool enabled = true;
  Duration interval{std::chrono::seconds(10)};  // between publications (and on changes)
};

// Scheduling knobs shared by every check (each may override them).
struct CheckTiming {
  Duration interval{std::chrono::seconds(5)};
  Duration unhealthy_interval{std::chrono::seconds(2)};  // faster polling while not passing
  Duration timeout{std::chrono::seconds(3)};
  Duration jitter{std::chrono::seconds(1)};  // random start offset, at most this
  int rise = 2;  // consecutive passing results before a failing check is passing again
  int fall = 2;  // consecutive failing results before a passing check is reported failing
};

// One configured check: its name, its type (a key in the check registry), its timing and
// the YAML mapping of its type-specific parameters (validated when the check is built).
struct CheckSpec {
  std::string name;
  std::string type;
  CheckTiming timing;
  YAML::Node params;  // the whole mapping, timing keys included
  std::string file;   // where params came from ("" for built-in defaults)
  std::string path;   // dotted key of the mapping, for messages
};

// One alert receiver (alerts.webhooks[]). See docs/alerts.md.
// fener: fener's own JSON schema (`format: json`); slack; alertmanager.
enum class WebhookFormat { fener, slack, alertmanager };
std::string_view to_string(WebhookFormat f);

struct WebhookConfig {
  std::string name;  // unique; names it in logs and metrics
  std::string url;   // http(s); for alertmanager the base URL (/api/v2/alerts is added)
  WebhookFormat format = WebhookFormat::fener;
  std::string secret;         // HMAC-SHA256 key for json deliveries, "" for none; never logged
  std::string secret_source;  // the file it came from, for messages (never the secret)
  bool check_events = true;   // which event kinds go to this receiver
  bool remedy_events = true;
  // What opens an alert; once open, a condition's changes go out until it resolves.
  Status min_severity = Status::warning;
  Duration timeout{std::chrono::seconds(5)};
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
};

// Exponential backoff with full jitter: before retry n (1-based) wait a random time in
// [0, min(max, initial * 2^(n-1))]; give up after `attempts` attempts in all.
struct RetryPolicy {
  Duration initial{std::chrono::seconds(1)};
  Duration max{std::chrono::seconds(60)};
  int attempts = 8;
};

struct AlertsConfig {
  std::vector<WebhookConfig> webhooks;
  std::size_t queue_size = 256;  // events waiting per webhook; overflow drops the oldest
  RetryPolicy retry;
  Duration group_wait{std::chrono::seconds(2)};     // events this close together go in one delivery
  Duration repeat_interval{std::chrono::hours(4)};  // same key and state not re-sent sooner
};

struct Config {
  std::string config_file;  // fener's own file, "" when none

  // Node identity.
  std::string node_name;     // Patroni member name / etcd member name
  std::string node_address;  // the node's own IP (host of Patroni's connect_address)
  std::string scope;         // Patroni cluster scope

  // Patroni, when this node runs it. patroni_url empty means no Patroni here.
  std::string patroni_config;  // path of patroni.yml used for discovery, "" when none
  std::string patroni_url;     // e.g. http://127.0.1.2:8008
  std::string patroni_username;
  std::string patroni_password;
  std::string patroni_dcs;                      // "etcd" (v2 API), "etcd3", or ""
  std::vector<std::string> patroni_etcd_hosts;  // host:port as patroni.yml lists them
  bool patroni_etcd_uses_host_key = false;      // patroni.yml said `host:` (singular)
  int expected_members = 0;                     // Patroni members expected, 0 = don't check
  // How fener talks to Patroni's REST API over https: as patronictl does (ctl.cacert or
  // restapi.cafile; ctl.certfile/keyfile or restapi.certfile/keyfile; ctl.insecure), then
  // fener.yaml's patroni.cacert/cert/key/verify.
  TlsSettings patroni_tls;

  // etcd.
  std::vector<std::string> etcd_endpoints;  // client URLs of every member
  std::vector<EtcdMember> etcd_members;     // expected membership, may be empty
  std::vector<std::string> etcd_env_files;  // environment files to lint
  bool etcd_env_files_explicit = false;     // listed by the operator: missing is an error
  // How fener talks to etcd over https: patroni.yml's etcd(3).cacert/cert/key, then
  // fener.yaml's etcd.cacert/cert/key/verify.
  TlsSettings etcd_tls;

  // Certificates fener and Patroni use, for the certificate lint (config_lint).
  std::vector<TlsFileSet> tls_files;

  // HAProxy, when this node runs it (the HAProxy node): read from haproxy.cfg.
  struct Haproxy {
    std::string config;  // haproxy.cfg used for discovery, "" when none
    std::string socket;  // stats socket: unix path or IP:PORT; "" when unknown
    std::vector<std::string> primary_backends;  // sections routing to the leader
    std::vector<std::string> replica_backends;  // sections routing to replicas
    bool explicit_config = false;               // named by the operator
  } haproxy;

  // PostgreSQL.
  std::string pg_data_dir;
  std::string pg_listen;  // host:port PostgreSQL should listen on
  std::string pg_bin_dir;
  std::string pg_owner = "postgres";

  // Defaults for every check, then the checks themselves.
  CheckTiming defaults;
  std::vector<CheckSpec> checks;

  // Logging.
  std::string log_level = "info";

  // Remedies.
  Mode mode = Mode::safe;
  ApiConfig api;
  AgentConfig agent;
  std::vector<PeerFileRoot> peer_files;
  FleetConfig fleet;
  // fener's own state: intent records of actions in flight, rules held after a crash.
  std::string state_dir = "/var/lib/fener";
  std::string audit_file;  // JSON lines; "" = only the normal log
  Duration lock_ttl{std::chrono::seconds(60)};
  // How to restart a service where systemd does not run (service_restart's default
  // `command` for that service): name -> argv.
  std::map<std::string, std::vector<std::string>> service_commands;
  // Rules: the built-in set (conf/rules.yaml) merged with the file's `rules:` entries.
  // Each entry keeps the file it came from, for messages; validated by build_rules().
  struct RuleSource {
    std::string name;
    YAML::Node node;
    std::string file;
    std::string path;
    bool builtin = false;  // defined in conf/rules.yaml (perhaps adjusted by the file)
  };
  std::vector<RuleSource> rules;

  // Alert webhooks; none by default.
  AlertsConfig alerts;
};

inline constexpr int kDefaultApiPort = 8009;
inline constexpr int kDefaultAgentPort = 8010;

struct LoadOptions {
  std::optional<std::string> config_file;     // --config
  std::optional<std::string> patroni_config;  // --patroni-config
  std::optional<Mode> mode;                   // --mode, over the file's `mode:`
};

// Default locations, used when they exist and nothing else was given.
inline constexpr const char* kDefaultConfigFile = "/etc/fener/fener.yaml";
inline constexpr const char* kDefaultPatroniConfig = "/etc/patroni.yml";
inline constexpr const char* kDefaultTokenFile = "/etc/fener/token";
inline constexpr const char* kDefaultStateDir = "/var/lib/fener";
inline constexpr const char* kDefaultHaproxyConfig = "/etc/haproxy/haproxy.cfg";
inline const std::vector<std::string> kDefaultEtcdEnvFiles = {"/etc/etcd/etcd.conf",
                                                              "/etc/default/etcd"};

// Throws ConfigError. Reads files (blocking): call before the event loop runs, or from
// the worker on reload.
Config load_config(const LoadOptions& opts);

// Reads interval, unhealthy_interval, timeout, jitter, rise and fall from m into t.
void read_check_timing(YamlMap& m, CheckTiming& t);

// Host part of "host:port", "[v6]:port" or "scheme://host:port/path".
std::string host_of(const std::string& address_or_url);
// "https://hooks.example/..." for "https://user:pw@hooks.example/T0/B1/secret?x": scheme, host
// and port only. Webhook URLs often carry their secret in the path.
std::string redact_url(const std::string& url);
// Port part, or fallback.
int port_of(const std::string& address_or_url, int fallback);

}  // namespace fener
