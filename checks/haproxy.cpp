#include "checks/haproxy.hpp"

#include <sys/un.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <sstream>
#include <utility>
#include <variant>

#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "remedies/remedy.hpp"
#include "src/cluster_facts.hpp"
#include "src/cluster_http.hpp"
#include "src/guards.hpp"
#include "src/http_client.hpp"

// GCC 12 at -O2 pairs Asio's coroutine-frame operator new/delete wrongly after inlining
// the `||` of two coroutines and warns; the frames are allocated and freed by one class.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace fener {

using namespace asio::experimental::awaitable_operators;

namespace {

std::vector<std::string> split_blank(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::optional<int> to_int(const std::string& s) {
  try {
    std::size_t used = 0;
    const int v = std::stoi(s, &used);
    if (used != s.size()) return std::nullopt;
    return v;
  } catch (...) {
    return std::nullopt;
  }
}

// A string field of a JSON object, "" when absent or of another type (peers are not trusted).
std::string str_field(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// One word for a server's state, as HAProxy's stats page says it.
std::string state_word(const HaproxyServerState& s) {
  if (s.maint()) return "MAINT";
  if (s.up() && s.drain()) return "DRAIN";
  switch (s.op_state) {
    case 1:
      return "STARTING";
    case 2:
      return "UP";
    case 3:
      return "STOPPING";
    default:
      return "DOWN";
  }
}

// Member a server stands for: same name, else the only member at the server's address.
std::string member_of(const HaproxyServerState& s, const std::vector<PatroniMemberInfo>& members) {
  for (const auto& m : members)
    if (m.name == s.name) return m.name;
  const PatroniMemberInfo* found = nullptr;
  for (const auto& m : members) {
    if (m.host.empty() || m.host != s.address) continue;
    if (found) return "";
    found = &m;
  }
  return found ? found->name : "";
}

bool healthy_replica(const PatroniMemberInfo& m, const std::string& leader) {
  return m.name != leader && !is_leader_role(m.role) && !m.noloadbalance &&
         (m.state == "running" || m.state == "streaming");
}

template <class Socket, class Endpoint>
asio::awaitable<void> talk(Socket& sock, Endpoint ep, const std::string& command,
                           std::size_t max_bytes, StatsSocketAnswer& out) {
  boost::system::error_code ec;
  co_await sock.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = ec == asio::error::connection_refused ? StatsSocketAnswer::Error::refused
                : ec == boost::system::errc::no_such_file_or_directory
                    ? StatsSocketAnswer::Error::missing
                    : StatsSocketAnswer::Error::other;
    out.error_text = ec.message();
    co_return;
  }
  co_await asio::async_write(sock, asio::buffer(command),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = StatsSocketAnswer::Error::other;
    out.error_text = "sending the command: " + ec.message();
    co_return;
  }
  std::array<char, 8192> buf{};
  for (;;) {
    const std::size_t n = co_await sock.async_read_some(
        asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    out.text.append(buf.data(), n);
    if (out.text.size() > max_bytes) {
      out.error = StatsSocketAnswer::Error::too_large;
      out.error_text = "answer larger than " + std::to_string(max_bytes) + " bytes";
      co_return;
    }
    if (ec == asio::error::eof) co_return;
    if (ec) {
      out.error = StatsSocketAnswer::Error::other;
      out.error_text = "reading the answer: " + ec.message();
      co_return;
    }
  }
}

// What etcd says about the Patroni cluster.
struct DcsView {
  std::optional<std::string> leader;
  std::string reason;  // why the leader is unknown
  std::vector<PatroniMemberInfo> members;
  json evidence = json::object();
};

class HaproxyCheck final : public Check {
 public:
  HaproxyCheck(std::string socket, std::vector<std::string> primary,
               std::vector<std::string> replica, std::vector<std::string> endpoints,
               std::string scope, TlsSettings tls)
      : socket_(std::move(socket)),
        primary_(std::move(primary)),
        replica_(std::move(replica)),
        endpoints_(std::move(endpoints)),
        scope_(std::move(scope)),
        tls_(std::move(tls)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    const auto deadline = std::chrono::steady_clock::now() + ctx.timeout;
    // Half the budget for HAProxy, the rest for etcd.
    const Duration sock_timeout = std::max(Duration(200), ctx.timeout / 2);
    std::string sock = socket_;
    std::string cmd = "show servers state";
    auto ans = co_await stats_socket_command(std::move(sock), std::move(cmd), sock_timeout);
    if (ans.error != StatsSocketAnswer::Error::none) co_return socket_failure(ans, sock_timeout);
    auto parsed = parse_servers_state(ans.text);
    if (!parsed.error.empty()) {
      co_return CheckResult::make(
          Status::unknown, "HAProxy stats socket " + socket_ + ": " + parsed.error,
          {{"socket", "garbage"}, {"stats_socket", socket_}, {"answer", snippet(ans.text, 200)}});
    }
    DcsView dcs = co_await read_dcs(ctx, deadline);
    HaproxyJudgeInput in;
    in.servers = std::move(parsed.servers);
    in.primary_backends = primary_;
    in.replica_backends = replica_;
    in.leader = dcs.leader;
    in.leader_unknown_reason = dcs.reason;
    in.members = std::move(dcs.members);
    in.socket = socket_;
    CheckResult r = judge_haproxy(in);
    r.evidence["etcd"] = std::move(dcs.evidence);
    co_return r;
  }

 private:
  CheckResult socket_failure(const StatsSocketAnswer& a, Duration timeout) const {
    using E = StatsSocketAnswer::Error;
    json ev = {{"socket", std::string(to_string(a.error))},
               {"stats_socket", socket_},
               {"detail", a.error_text}};
    if (a.error == E::refused) {
      return CheckResult::make(
          Status::critical,
          "HAProxy is not running: its stats socket " + socket_ + " refuses connections", ev);
    }
    if (a.error == E::missing) {
      return CheckResult::make(
          Status::critical,
          "HAProxy is not running: its stats socket " + socket_ + " does not exist", ev);
    }
    if (a.error == E::timeout) {
      return CheckResult::make(
          Status::unknown,
          "HAProxy stats socket " + socket_ + " did not answer within " + format_duration(timeout),
          ev);
    }
    return CheckResult::make(Status::unknown,
                             "HAProxy stats socket " + socket_ + ": " + a.error_text, ev);
  }

  Duration remaining(std::chrono::steady_clock::time_point deadline, std::size_t left) const {
    const auto rest =
        std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
    return std::max(Duration(250), rest / static_cast<long>(std::max<std::size_t>(1, left)));
  }

  // GET path from the endpoints in turn, starting with the last one that answered.
  asio::awaitable<std::optional<HttpResult>> etcd_get(
      CheckContext& ctx, const std::string& path, std::chrono::steady_clock::time_point deadline,
      json& ev) {
    const std::size_t n = endpoints_.size();
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t idx = (good_ + i) % n;
      HttpRequest req = tls_request(tls_, endpoints_[idx] + path, remaining(deadline, n - i));
      auto r = co_await ctx.http.fetch(std::move(req));
      if (r.ok() && (r.status == 200 || r.status == 404)) {
        good_ = idx;
        ev[endpoints_[idx]] = "HTTP " + std::to_string(r.status);
        co_return r;
      }
      ev[endpoints_[idx]] = r.ok() ? "HTTP " + std::to_string(r.status) : r.describe();
    }
    co_return std::nullopt;
  }

  asio::awaitable<DcsView> read_dcs(CheckContext& ctx,
                                    std::chrono::steady_clock::time_point deadline) {
    DcsView v;
    if (endpoints_.empty()) {
      v.reason = "no etcd endpoints known";
      co_return v;
    }
    if (scope_.empty()) {
      // The HAProxy node has no patroni.yml: the one cluster under /service/ is ours.
      const std::string list_path = "/v2/keys/service/?quorum=true";
      auto r = co_await etcd_get(ctx, list_path, deadline, v.evidence);
      if (!r) {
        v.reason = "no etcd endpoint answered";
        co_return v;
      }
      std::vector<std::string> scopes;
      auto body = parse_json(r->body);
      if (body && r->status == 200 && body->is_object() && body->contains("node")) {
        const json& node = (*body)["node"];
        if (node.is_object() && node.contains("nodes") && node["nodes"].is_array()) {
          for (const auto& c : node["nodes"]) {
            if (!c.is_object() || !c.contains("dir") || c["dir"] != true) continue;
            const std::string key = str_field(c, "key");
            if (!key.empty()) scopes.push_back(key.substr(key.rfind('/') + 1));
          }
        }
      }
      if (scopes.size() != 1) {
        v.reason = scopes.empty() ? "etcd holds no Patroni cluster under /service/"
                                  : "etcd holds several Patroni clusters under /service/ (" +
                                        join(scopes) + "); set cluster.scope";
        co_return v;
      }
      scope_ = scopes.front();
    }
    v.evidence["scope"] = scope_;
    const std::string tree_path = "/v2/keys/service/" + scope_ + "/?recursive=true&quorum=true";
    auto r = co_await etcd_get(ctx, tree_path, deadline, v.evidence);
    if (!r) {
      v.reason = "no etcd endpoint answered";
      co_return v;
    }
    auto body = parse_json(r->body);
    if (r->status == 404 || !body) {
      v.reason = r->status == 404 ? "etcd has no Patroni cluster " + scope_
                                  : "etcd answered something that is not JSON";
      co_return v;
    }
    ClusterFacts facts;
    read_dcs_tree(*body, facts);
    if (facts.evidence.contains("members"))
      v.members = patroni_members_from_dcs(facts.evidence["members"]);
    if (!facts.leader_name) {
      v.reason = "etcd holds no leader key for " + scope_;
      co_return v;
    }
    v.leader = facts.leader_name;
    co_return v;
  }

  std::string socket_;
  std::vector<std::string> primary_, replica_;
  std::vector<std::string> endpoints_;
  std::string scope_;     // learnt from etcd when not configured
  TlsSettings tls_;       // how etcd is reached over https
  std::size_t good_ = 0;  // endpoint that answered last
};

}  // namespace

HaproxyStateParse parse_servers_state(std::string_view text) {
  HaproxyStateParse out;
  std::istringstream in{std::string(text)};
  std::string line;
  if (!std::getline(in, line) || split_blank(line) != std::vector<std::string>{"1"}) {
    out.error = "not a servers state (format version 1) answer: \"" + snippet(line, 80) + "\"";
    return out;
  }
  std::map<std::string, std::size_t> col;
  bool header = false;
  while (std::getline(in, line)) {
    auto w = split_blank(line);
    if (w.empty()) continue;
    if (w[0] == "#") {
      for (std::size_t i = 1; i < w.size(); ++i) col[w[i]] = i - 1;
      header = true;
      continue;
    }
    if (!header) {
      out.error = "servers state without its \"# be_id be_name ...\" header";
      return out;
    }
    for (const char* need :
         {"be_name", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state"}) {
      if (!col.count(need)) {
        out.error = std::string("servers state header lacks the column ") + need;
        return out;
      }
    }
    auto field = [&](const char* name) -> std::optional<std::string> {
      auto it = col.find(name);
      if (it == col.end() || it->second >= w.size()) return std::nullopt;
      return w[it->second];
    };
    HaproxyServerState s;
    auto op = field("srv_op_state");
    auto admin = field("srv_admin_state");
    auto opv = op ? to_int(*op) : std::nullopt;
    auto adminv = admin ? to_int(*admin) : std::nullopt;
    if (!field("srv_name") || !opv || !adminv) {
      out.error = "malformed servers state line: \"" + snippet(line, 80) + "\"";
      return out;
    }
    s.backend = *field("be_name");
    s.name = *field("srv_name");
    s.address = *field("srv_addr");
    s.op_state = *opv;
    s.admin_state = *adminv;
    if (auto p = field("srv_port")) s.port = to_int(*p).value_or(0);
    if (auto wt = field("srv_uweight")) s.weight = to_int(*wt).value_or(1);
    out.servers.push_back(std::move(s));
  }
  return out;
}

std::string haproxy_admin_phrase(const HaproxyServerState& s) {
  const int a = s.admin_state;
  std::vector<std::string> who;
  if (s.maint()) {
    if (a & 0x01) who.push_back("forced: stats socket or agent");
    if (a & 0x02) who.push_back("inherited from a tracked server");
    if (a & 0x04) who.push_back("configuration: disabled");
    if (a & 0x20) who.push_back("DNS resolution failed");
    if (a & 0x40) who.push_back("hostname change");
    return "MAINT (" + join(who, "; ") + ")";
  }
  if (s.drain()) {
    if (a & 0x08) who.push_back("forced: stats socket or agent");
    if (a & 0x10) who.push_back("inherited from a tracked server");
    if (s.weight == 0) who.push_back("weight 0");
    return "DRAIN (" + join(who, "; ") + ")";
  }
  return "";
}

std::vector<PatroniMemberInfo> patroni_members_from_dcs(const json& members) {
  std::vector<PatroniMemberInfo> out;
  if (!members.is_object()) return out;
  for (const auto& [name, m] : members.items()) {
    PatroniMemberInfo p;
    p.name = name;
    if (m.is_object()) {
      if (auto conn = str_field(m, "conn_url"); !conn.empty()) p.host = host_of(conn);
      p.role = str_field(m, "role");
      p.state = str_field(m, "state");
      if (m.contains("tags") && m["tags"].is_object() && m["tags"].contains("noloadbalance")) {
        const json& t = m["tags"]["noloadbalance"];
        p.noloadbalance = (t.is_boolean() && t.get<bool>()) || (t.is_string() && t == "true");
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

CheckResult judge_haproxy(const HaproxyJudgeInput& in) {
  std::vector<std::string> crit, unk, warn, fine;
  std::vector<std::string> admin;  // MAINT/DRAIN: reported after the routing findings
  json ev = {{"socket", "answered"},
             {"stats_socket", in.socket},
             {"leader", in.leader ? json(*in.leader) : json(nullptr)},
             {"backends", json::object()}};
  if (!in.leader) ev["leader_unknown"] = in.leader_unknown_reason;

  auto servers_of = [&](const std::string& backend) {
    std::vector<const HaproxyServerState*> out;
    for (const auto& s : in.servers)
      if (s.backend == backend) out.push_back(&s);
    return out;
  };
  auto describe = [&](const std::vector<const HaproxyServerState*>& ss) {
    std::vector<std::string> parts;
    for (const auto* s : ss) parts.push_back(s->name + " " + state_word(*s));
    return join(parts);
  };
  auto record = [&](const std::string& backend, BackendRole role,
                    const std::vector<const HaproxyServerState*>& ss) {
    json list = json::array();
    for (const auto* s : ss) {
      json e = {{"server", s->name},       {"address", s->address},
                {"state", state_word(*s)}, {"serving", s->serving()},
                {"op_state", s->op_state}, {"admin_state", s->admin_state}};
      const std::string m = member_of(*s, in.members);
      if (!m.empty()) e["member"] = m;
      if (auto p = haproxy_admin_phrase(*s); !p.empty()) {
        e["admin"] = p;
        admin.push_back(backend + "/" + s->name + " in " + p);
      }
      list.push_back(std::move(e));
    }
    ev["backends"][backend] = {{"role", std::string(to_string(role))}, {"servers", list}};
  };

  for (const auto& b : in.primary_backends) {
    const auto ss = servers_of(b);
    if (ss.empty()) {
      crit.push_back("HAProxy has no backend " + b + " (configured as primary)");
      continue;
    }
    record(b, BackendRole::primary, ss);
    std::vector<const HaproxyServerState*> serving;
    for (const auto* s : ss)
      if (s->serving()) serving.push_back(s);
    if (serving.empty()) {
      crit.push_back("primary backend " + b + " has no server UP (" + describe(ss) + ")");
    } else if (serving.size() > 1) {
      std::vector<std::string> names;
      for (const auto* s : serving) names.push_back(s->name);
      crit.push_back("primary backend " + b + " has " + std::to_string(serving.size()) +
                     " servers UP (" + join(names) + "): writes may go to a replica");
    } else if (in.leader) {
      const std::string m = member_of(*serving.front(), in.members);
      if (m != *in.leader) {
        crit.push_back("primary backend " + b + " sends writes to " + serving.front()->name +
                       ", not to the leader " + *in.leader);
      } else {
        fine.push_back(b + " -> " + serving.front()->name + " (leader)");
      }
    } else {
      unk.push_back("primary backend " + b + " serves " + serving.front()->name +
                    "; the leader is unknown: " + in.leader_unknown_reason);
    }
  }

  for (const auto& b : in.replica_backends) {
    const auto ss = servers_of(b);
    if (ss.empty()) {
      warn.push_back("HAProxy has no backend " + b + " (configured as replica)");
      continue;
    }
    record(b, BackendRole::replica, ss);
    std::vector<std::string> serving;
    for (const auto* s : ss)
      if (s->serving()) serving.push_back(s->name);
    if (serving.empty()) {
      warn.push_back("replica backend " + b + " has no server UP (" + describe(ss) + ")");
      continue;
    }
    if (!in.leader) continue;  // which replicas are healthy is not known either
    std::vector<std::string> missing;
    for (const auto& m : in.members) {
      if (!healthy_replica(m, *in.leader)) continue;
      const HaproxyServerState* srv = nullptr;
      for (const auto* s : ss)
        if (member_of(*s, in.members) == m.name) srv = s;
      if (!srv) {
        missing.push_back(m.name + " (no server)");
      } else if (!srv->serving()) {
        missing.push_back(m.name + " (" + state_word(*srv) + ")");
      }
    }
    if (!missing.empty()) {
      warn.push_back("replica backend " + b + " lacks healthy replica " + join(missing));
    } else {
      fine.push_back(b + " -> " + join(serving));
    }
  }
  if (!in.leader && unk.empty() && crit.empty() && !in.replica_backends.empty())
    unk.push_back("the leader is unknown: " + in.leader_unknown_reason);
  if (in.primary_backends.empty() && in.replica_backends.empty())
    unk.push_back("no primary or replica backends to judge");

  warn.insert(warn.end(), admin.begin(), admin.end());
  // The worst findings lead the message; the others follow.
  std::vector<std::string> all = crit;
  all.insert(all.end(), unk.begin(), unk.end());
  all.insert(all.end(), warn.begin(), warn.end());
  if (!crit.empty()) return CheckResult::make(Status::critical, join(all, "; "), ev);
  if (!unk.empty()) return CheckResult::make(Status::unknown, join(all, "; "), ev);
  if (!warn.empty()) return CheckResult::make(Status::warning, join(all, "; "), ev);
  return CheckResult::make(Status::passing, "HAProxy routes " + join(fine, "; "), ev);
}

std::string_view to_string(StatsSocketAnswer::Error e) {
  switch (e) {
    case StatsSocketAnswer::Error::none:
      return "answered";
    case StatsSocketAnswer::Error::missing:
      return "missing";
    case StatsSocketAnswer::Error::refused:
      return "refused";
    case StatsSocketAnswer::Error::timeout:
      return "timeout";
    case StatsSocketAnswer::Error::too_large:
      return "too_large";
    case StatsSocketAnswer::Error::other:
      return "error";
  }
  return "error";
}

asio::awaitable<StatsSocketAnswer> stats_socket_command(std::string socket, std::string command,
                                                        Duration timeout, std::size_t max_bytes) {
  StatsSocketAnswer out;
  auto ex = co_await asio::this_coro::executor;
  command += "\n";
  asio::steady_timer timer(ex, timeout);
  std::variant<std::monostate, std::monostate> which;
  if (stats_socket_is_tcp(socket)) {
    boost::system::error_code ec;
    const auto addr = asio::ip::make_address(host_of(socket), ec);
    if (ec) {
      out.error = StatsSocketAnswer::Error::other;
      out.error_text = "not an IP address: " + host_of(socket);
      co_return out;
    }
    asio::ip::tcp::socket sock(ex);
    asio::ip::tcp::endpoint ep(addr, static_cast<unsigned short>(port_of(socket, 0)));
    auto op = talk(sock, ep, command, max_bytes, out) || timer.async_wait(asio::use_awaitable);
    which = co_await std::move(op);
  } else {
    if (socket.size() >= sizeof(sockaddr_un::sun_path)) {
      out.error = StatsSocketAnswer::Error::other;
      out.error_text = "unix socket path longer than " +
                       std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes";
      co_return out;
    }
    asio::local::stream_protocol::socket sock(ex);
    asio::local::stream_protocol::endpoint ep(socket);
    auto op = talk(sock, ep, command, max_bytes, out) || timer.async_wait(asio::use_awaitable);
    which = co_await std::move(op);
  }
  if (which.index() == 1) {
    out.error = StatsSocketAnswer::Error::timeout;
    out.error_text = "no complete answer within " + format_duration(timeout);
  }
  co_return out;
}

std::unique_ptr<Check> make_haproxy_check(YamlMap& params, const Config& config) {
  std::string socket = config.haproxy.socket;
  if (auto v = params.str("socket")) {
    socket = normalize_stats_socket(*v);
    const bool ok = (!socket.empty() && socket[0] == '/') ||
                    (stats_socket_is_tcp(socket) && !host_of(socket).empty());
    if (!ok)
      params.fail("socket",
                  "expected a unix socket path such as /run/haproxy/admin.sock or "
                  "IP:PORT, got \"" +
                      *v + "\"");
  }
  if (socket.empty()) {
    params.fail_here(
        "no HAProxy stats socket known (none in " +
        (config.haproxy.config.empty() ? std::string("haproxy.cfg") : config.haproxy.config) +
        "); set `socket:` or haproxy.socket, e.g. /run/haproxy/admin.sock");
  }
  auto primary =
      params.str_list("primary_backends", true).value_or(config.haproxy.primary_backends);
  auto replica =
      params.str_list("replica_backends", true).value_or(config.haproxy.replica_backends);
  for (const auto& b : primary) {
    if (std::find(replica.begin(), replica.end(), b) != replica.end())
      params.fail("replica_backends", "\"" + b + "\" is listed as primary and as replica backend");
  }
  if (primary.empty() && replica.empty()) {
    params.fail_here("no primary or replica backends known" +
                     (config.haproxy.config.empty()
                          ? std::string()
                          : " (none recognised in " + config.haproxy.config + ")") +
                     "; list them under primary_backends: and replica_backends:");
  }
  std::vector<std::string> endpoints;
  for (auto e : config.etcd_endpoints) {
    while (!e.empty() && e.back() == '/') e.pop_back();
    endpoints.push_back(std::move(e));
  }
  return std::make_unique<HaproxyCheck>(std::move(socket), std::move(primary), std::move(replica),
                                        std::move(endpoints), config.scope, config.etcd_tls);
}

}  // namespace fener
