#include "checks/leader_files.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <utility>

#include "checks/patroni_node.hpp"
#include "src/cluster_http.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

bool is_leader_role(const std::string& role) {
  return role == "leader" || role == "standby_leader" || role == "master" || role == "primary";
}

std::string file_ref(const std::string& root, const std::string& name) {
  return root + "/" + name;
}

std::string join(const std::vector<std::string>& items, std::size_t max = 5) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < max; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > max) out += " and " + std::to_string(items.size() - max) + " more";
  return out;
}

json file_json(const std::string& root, const PeerFile& f) {
  json j = to_json(f);
  j["root"] = root;
  return j;
}

Duration remaining(std::chrono::steady_clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
  return std::max(left, Duration{100});
}

// GCC 12 inlines Asio's coroutine frame allocation here and then mistakes its matching
// deallocation for a mismatched one (a false positive of -Wmismatched-new-delete).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

class LeaderFilesCheck final : public Check {
 public:
  LeaderFilesCheck(LeaderFilesParams p, TlsSettings tls) : p_(std::move(p)), tls_(std::move(tls)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    if (p_.roots.empty())
      co_return CheckResult::make(Status::unknown, "no peer_files roots configured to compare");
    const auto deadline = std::chrono::steady_clock::now() + ctx.timeout;
    const std::string cluster_url = p_.patroni_url + "/cluster";
    HttpRequest req = tls_request(tls_, cluster_url, remaining(deadline));
    HttpResult r = co_await ctx.http.fetch(std::move(req));
    auto body = r.ok() && (r.status == 200 || r.status == 503) ? parse_json(r.body) : std::nullopt;
    if (!body)
      co_return CheckResult::make(Status::unknown,
                                  describe_unusable_answer(r, cluster_url, "a /cluster document"),
                                  {{"url", cluster_url}});
    std::string why;
    auto leader = find_cluster_leader(*body, &why);
    if (!leader)
      co_return CheckResult::make(Status::unknown, "cannot tell the leader: " + why,
                                  {{"url", cluster_url}});
    if (leader->name == p_.node_name)
      co_return CheckResult::make(Status::passing, "this node is the leader",
                                  {{"leader", leader->name}});
    if (p_.token.empty())
      co_return CheckResult::make(
          Status::unknown,
          "no api.token configured: cannot ask leader " + leader->name + " for its files",
          {{"leader", leader->name}});

    const std::string source = peer_api_url(leader->host, p_.port) + "/v1/peer/files";
    std::string url = source;
    std::string token = p_.token;
    std::string leader_name = leader->name;
    auto theirs = co_await fetch_leader_listing(ctx.http, std::move(url), std::move(token),
                                                std::move(leader_name), remaining(deadline), &why);
    if (!theirs)
      co_return CheckResult::make(Status::unknown, why,
                                  {{"leader", leader->name}, {"source", source}});

    auto job = [node = p_.node_name, roots = p_.roots, max = p_.max_size] {
      return list_peer_roots(node, roots, max);
    };
    PeerListing ours = co_await offload(ctx.worker, std::move(job));
    try {
      co_return judge_leader_files(compare_peer_files(*theirs, ours, p_.roots), leader->name,
                                   source);
    } catch (const std::exception& e) {
      co_return CheckResult::make(Status::unknown,
                                  std::string("could not compare peer files: ") + e.what());
    }
  }

 private:
  LeaderFilesParams p_;
  TlsSettings tls_;
};

#pragma GCC diagnostic pop

}  // namespace

std::optional<ClusterLeader> find_cluster_leader(const json& cluster, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<ClusterLeader> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  const json* members = patroni_field(cluster, "members");
  if (!members || !members->is_array()) return fail("/cluster has no members list");
  std::vector<ClusterLeader> leaders;
  for (const auto& m : *members) {
    if (!is_leader_role(patroni_str(m, "role").value_or(""))) continue;
    leaders.push_back({patroni_str(m, "name").value_or(""), patroni_str(m, "host").value_or("")});
  }
  if (leaders.empty()) return fail("no leader in /cluster");
  if (leaders.size() > 1) return fail("more than one leader in /cluster");
  if (leaders[0].name.empty()) return fail("the leader has no name in /cluster");
  if (leaders[0].host.empty())
    return fail("leader " + leaders[0].name + " has no host in /cluster");
  return leaders[0];
}

std::string peer_api_url(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// GCC 12 inlines Asio's coroutine frame allocation here and then mistakes its matching
// deallocation for a mismatched one (a false positive of -Wmismatched-new-delete).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

asio::awaitable<std::optional<PeerListing>> fetch_leader_listing(HttpClient& http, std::string url,
                                                                 std::string token,
                                                                 std::string leader,
                                                                 Duration timeout,
                                                                 std::string* why) {
  HttpRequest req;
  req.url = url;
  req.timeout = timeout;
  req.headers.push_back("Authorization: Bearer " + token);
  req.max_body = 4 << 20;
  HttpResult r = co_await http.fetch(std::move(req));
  auto fail = [&](std::string reason) -> std::optional<PeerListing> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (!r.ok()) co_return fail("leader " + leader + "'s fener at " + url + ": " + r.describe());
  auto body = parse_json(r.body);
  if (r.status != 200) {
    std::string detail =
        body && body->is_object() && body->contains("error") && (*body)["error"].is_string()
            ? (*body)["error"].get<std::string>()
            : body_excerpt(r.body);
    co_return fail("leader " + leader + "'s fener at " + url + " answered HTTP " +
                   std::to_string(r.status) + ": " + detail);
  }
  const auto node = r.header("x-fener-node");
  if (node != leader)
    co_return fail(url + " answered as node \"" + node.value_or("") + "\", not the leader " +
                   leader + ": refused");
  if (!body) co_return fail(url + " answered non-JSON: '" + body_excerpt(r.body) + "'");
  std::string parse_why;
  auto listing = parse_peer_listing(*body, &parse_why);
  if (!listing) co_return fail(url + " answered an unusable listing: " + parse_why);
  if (listing->node != leader)
    co_return fail(url + " listed the files of node \"" + listing->node + "\", not the leader " +
                   leader + ": refused");
  co_return listing;
}

#pragma GCC diagnostic pop

CheckResult judge_leader_files(const PeerFilesComparison& cmp, const std::string& leader,
                               const std::string& source) {
  json ev = {{"leader", leader},
             {"source", source},
             {"missing", json::array()},
             {"differing", json::array()},
             {"identical", cmp.identical}};
  std::vector<std::string> missing, differing, refused;
  for (const auto& d : cmp.missing) {
    ev["missing"].push_back(file_json(d.root, d.leader));
    missing.push_back(file_ref(d.root, d.leader.name));
  }
  for (const auto& d : cmp.differing) {
    json j = {{"root", d.root}, {"name", d.leader.name}, {"leader", to_json(d.leader)}};
    if (d.local) j["local"] = to_json(*d.local);
    ev["differing"].push_back(std::move(j));
    std::string what;
    if (d.content_differs) what = "content";
    if (d.mode_differs && d.local)
      what += (what.empty() ? "" : ", ") + std::string("mode ") + d.local->mode + " here, " +
              d.leader.mode + " on the leader";
    differing.push_back(file_ref(d.root, d.leader.name) + " (" + what + ")");
  }
  if (!cmp.refused.empty()) {
    ev["refused"] = json::array();
    for (const auto& r : cmp.refused) {
      ev["refused"].push_back({{"root", r.root}, {"name", r.name}, {"reason", r.reason}});
      refused.push_back(r.reason);
    }
  }
  if (!cmp.unknown.empty()) ev["unknown"] = cmp.unknown;

  std::string msg;
  Status status = Status::passing;
  auto add = [&](Status s, const std::string& text) {
    msg += (msg.empty() ? "" : "; ") + text;
    status = worst(status, s);
  };
  if (!missing.empty())
    add(Status::critical, std::to_string(missing.size()) + " file" +
                              (missing.size() > 1 ? "s" : "") + " of leader " + leader +
                              " missing here: " + join(missing));
  if (!differing.empty())
    add(Status::warning, std::to_string(differing.size()) + " file" +
                             (differing.size() > 1 ? "s differ" : " differs") + " from leader " +
                             leader + ": " + join(differing));
  if (!refused.empty())
    add(Status::warning, "leader " + leader + " lists refused names: " + join(refused));
  if (!cmp.unknown.empty()) {
    // Not comparable roots: unknown, unless something worse is known.
    if (status == Status::passing) status = Status::unknown;
    msg += (msg.empty() ? "" : "; ") + std::string("not compared: ") + join(cmp.unknown);
  }
  if (msg.empty())
    msg = cmp.identical == 0 ? "leader " + leader + " has no allow-listed files; none missing here"
                             : std::to_string(cmp.identical) + " allow-listed file" +
                                   (cmp.identical > 1 ? "s" : "") + " same as on leader " + leader;
  return CheckResult::make(status, msg, std::move(ev));
}

std::vector<PeerFileRoot> read_peer_roots_param(YamlMap& params, const Config& config) {
  if (!params.has("roots")) return config.peer_files;
  auto names =
      params.str_list("roots", /*allow_comma_string=*/true).value_or(std::vector<std::string>{});
  if (names.empty()) params.fail("roots", "expected at least one peer_files root name");
  std::vector<PeerFileRoot> out;
  for (const auto& n : names) {
    const PeerFileRoot* r = find_peer_root(config.peer_files, n);
    if (!r) {
      std::string known;
      for (const auto& k : config.peer_files) known += (known.empty() ? "" : ", ") + k.name;
      params.fail("roots", "no peer_files root named \"" + n +
                               "\" (known: " + (known.empty() ? "none" : known) + ")");
    }
    if (!find_peer_root(out, n)) out.push_back(*r);
  }
  return out;
}

int read_peer_port_param(YamlMap& params, const Config& config) {
  const int fallback =
      config.api.listen.empty() ? kDefaultApiPort : port_of(config.api.listen, kDefaultApiPort);
  return static_cast<int>(params.integer("port", 1, 65535).value_or(fallback));
}

std::unique_ptr<Check> make_leader_files_check(YamlMap& params, const Config& config) {
  LeaderFilesParams p;
  p.patroni_url = config.patroni_url;
  while (!p.patroni_url.empty() && p.patroni_url.back() == '/') p.patroni_url.pop_back();
  if (p.patroni_url.empty())
    params.fail_here(
        "leader_files asks Patroni for the leader, but no Patroni REST API is known "
        "on this node (set patroni.url)");
  p.node_name = config.node_name;
  p.roots = read_peer_roots_param(params, config);
  p.port = read_peer_port_param(params, config);
  p.token = config.api.token;
  p.max_size = config.api.max_file_size;
  return std::make_unique<LeaderFilesCheck>(std::move(p), config.patroni_tls);
}

}  // namespace fener
