// The fleet view: every daemon publishes a short summary of its checks to etcd (v2 key
// /fener/SCOPE/nodes/NODE, with a TTL) every fleet.interval and soon after a check
// changes; `fener status --cluster` reads the directory from any etcd member and shows
// every node at once, with nodes that stopped publishing as STALE and expected nodes with
// no key as MISSING. Building, parsing and judging are pure functions (the clock is an
// argument); FleetPublisher is the loop that writes.
//
// Timing: a key is STALE once it is older than 3 of its publisher's intervals (two
// missed publications are a hiccup, three are a stopped daemon) and etcd deletes it
// after 10 (the TTL): between the two, for 7 intervals (70 s by default), readers see
// which node stopped and when; after that a node nobody expects leaves the view by
// itself (a decommissioned host) and an expected one shows as MISSING.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "src/metrics.hpp"
#include "src/result.hpp"
#include "src/status.hpp"
#include "src/tls.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

class HttpClient;

inline constexpr int kFleetStaleIntervals = 3;
// Bounds on what a published summary and etcd's listing may say; beyond them the entry is
// invalid (summary) or its TTL ignored.
inline constexpr double kFleetMaxIntervalSeconds = 7 * 24 * 3600;
inline constexpr unsigned long long kFleetMaxTtlSeconds = 1'000'000'000;
inline constexpr int kFleetTtlIntervals = 10;
// Bounds on what one node writes: etcd keeps every value in memory and in its log.
inline constexpr std::size_t kFleetMaxChecks = 64;
inline constexpr std::size_t kFleetMaxMessage = 160;  // bytes of each check's message
inline constexpr std::size_t kFleetMaxValue = 16 * 1024;

struct FleetCheck {
  std::string name;
  Status status = Status::unknown;  // published; unknown before the first result
  std::string message;
};

struct NodeSummary {
  std::string node;
  std::string scope;
  std::string mode;
  std::string version;
  Status status = Status::unknown;  // the worst check
  std::vector<FleetCheck> checks;
  SystemTime published_at{};
  Duration interval{std::chrono::seconds(10)};  // the publisher's: readers judge staleness by it
};

// The summary of a status snapshot, published at s.now.
NodeSummary make_summary(const StatusSnapshot& s, Duration interval);

// {"node","scope","mode","version","status","published_at","interval_seconds",
//  "ttl_seconds","checks":[{"name","status","message"}]}, within kFleetMaxValue: messages
// are cut to kFleetMaxMessage bytes, checks beyond kFleetMaxChecks are left out (counted
// in "checks_omitted"), and messages are dropped altogether if it is still too large.
nlohmann::json summary_to_json(const NodeSummary& s);
// nullopt (with why) when `j` is not such a document.
std::optional<NodeSummary> summary_from_json(const nlohmann::json& j, std::string* why = nullptr);

// TTL of a published key: kFleetTtlIntervals intervals, in whole seconds (at least 1).
long long fleet_ttl_seconds(Duration interval);
// "/fener/SCOPE/nodes" and "/fener/SCOPE/nodes/NODE", each segment percent-encoded.
std::string fleet_dir(const std::string& scope);
std::string fleet_key(const std::string& scope, const std::string& node);
// The PUT body: "value=<summary JSON, form-encoded>&ttl=<seconds>".
std::string fleet_put_form(const NodeSummary& s);

// One key of the directory as etcd lists it.
struct FleetKey {
  std::string node;                   // the key's last segment
  std::string value;                  // as stored
  std::optional<long long> ttl_left;  // seconds until etcd deletes it, when it said
};
// Reads `GET /v2/keys/fener/SCOPE/nodes?recursive=true`. An absent directory (etcd's 404
// errorCode 100) is an empty list, not an error; anything else unexpected is nullopt and why.
std::optional<std::vector<FleetKey>> parse_fleet_listing(long http_status, const std::string& body,
                                                         std::string* why = nullptr);
// Member names of a v2 directory listing such as /v2/keys/service/SCOPE/members (Patroni's
// registrations); empty when the body is not one.
std::vector<std::string> parse_member_names(const std::string& body);

enum class FleetState { fresh, stale, missing, invalid };
std::string_view to_string(FleetState s);

struct FleetEntry {
  std::string node;
  FleetState state = FleetState::missing;
  std::optional<NodeSummary> summary;  // fresh and stale
  std::chrono::seconds age{0};         // since its last publication (fresh and stale)
  std::string problem;                 // invalid: why; missing: who expected it
  // fresh: the node's own status; stale, missing, invalid: unknown (fener there could
  // not tell us, which is "could not check" for this node).
  Status status() const;
};

struct FleetView {
  std::string scope;
  std::vector<FleetEntry> nodes;    // by node name
  Status status = Status::passing;  // the worst entry; unknown when there is none
};

// Judges the listed keys at `now`: age from etcd's remaining TTL when it gave one (no
// clock of another node involved), else from published_at; STALE beyond
// kFleetStaleIntervals of the publisher's interval. `expected` names nodes that should
// publish (etcd and Patroni members); those without a key are MISSING.
FleetView judge_fleet(const std::string& scope, const std::vector<FleetKey>& keys,
                      const std::vector<std::string>& expected, SystemTime now);

nlohmann::json fleet_json(const FleetView& v);
// NODE, STATUS, AGE, CHECKS (failing checks by name, or "N/N passing").
std::string fleet_table(const FleetView& v);

// What `fener status --cluster` reads from etcd.
struct FleetRead {
  std::optional<std::vector<FleetKey>> keys;  // nullopt: no endpoint gave a usable answer
  std::vector<std::string> patroni_members;   // Patroni's v2 registrations, when any
  std::string endpoint;                       // the one that answered
  std::string error;                          // why keys is nullopt
};
// Tries the endpoints in order until one answers the listing; then asks the same one for
// Patroni's members (a failure there only leaves the list empty).
// tls: how etcd is reached over https (Config::etcd_tls). No default argument: GCC 12
// destroys a defaulted temporary inside the caller's co_await twice; pass a named local.
asio::awaitable<FleetRead> read_fleet(HttpClient& http, std::vector<std::string> endpoints,
                                      std::string scope, Duration timeout, TlsSettings tls);

// Writes this node's summary to etcd every interval, and `debounce` after a change
// (poke); at most one write per debounce however often checks change. Each write goes to
// the endpoint that took the last one; on a failure the next endpoints are tried.
// Runs on the loop; stop() cancels it, and the object must live until active() is 0.
class FleetPublisher {
 public:
  using SummaryFn = std::function<NodeSummary()>;
  FleetPublisher(asio::io_context& io, HttpClient& http, std::vector<std::string> endpoints,
                 std::string scope, std::string node, Duration interval, SummaryFn summary,
                 Duration debounce = std::chrono::seconds(1), TlsSettings tls = {});
  ~FleetPublisher();
  FleetPublisher(const FleetPublisher&) = delete;
  FleetPublisher& operator=(const FleetPublisher&) = delete;

  void start();
  void poke();  // a check's published status changed
  void stop();
  std::size_t active() const { return active_; }

  // One write now, with endpoint rotation; true when etcd took it.
  asio::awaitable<bool> publish_once();

  struct Stats {
    std::uint64_t ok = 0;
    std::uint64_t failed = 0;
    SystemTime last_ok{};
    std::string last_error;  // "" after a success
  };
  const Stats& stats() const { return stats_; }
  // fener_fleet_publications_total{outcome}, fener_fleet_last_publication_timestamp_seconds.
  void contribute(MetricsRegistry& m) const;

 private:
  asio::awaitable<void> loop();

  asio::io_context& io_;
  HttpClient& http_;
  std::vector<std::string> endpoints_;
  TlsSettings tls_;
  std::string scope_, node_;
  Duration interval_, debounce_;
  SummaryFn summary_;
  asio::steady_timer timer_;
  asio::cancellation_signal stop_signal_;
  std::size_t next_endpoint_ = 0;
  bool running_ = false;
  bool poked_ = false;
  std::chrono::steady_clock::time_point poke_at_{}, last_publish_{};
  std::size_t active_ = 0;
  Stats stats_;
};

}  // namespace fener
