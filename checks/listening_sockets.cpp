#include "checks/listening_sockets.hpp"

#include <algorithm>
#include <utility>

#include "src/worker.hpp"

namespace fener {

namespace {

// The kernel keeps 15 characters of a process name (TASK_COMM_LEN - 1).
constexpr std::size_t kCommLen = 15;

bool same_host(const std::string& a, const std::string& b) {
  auto na = normalize_address(a), nb = normalize_address(b);
  return na && nb ? *na == *nb : a == b;
}

// Only the usual names: the lab gives each node its own 127.0.1.x address.
bool is_loopback_host(const std::string& h) {
  auto n = normalize_address(h);
  return h == "localhost" || (n && (*n == "127.0.0.1" || *n == "::1"));
}

// A concrete IP to expect a listener on, or "" (any address) when host is none.
std::string concrete_ip(const std::string& host) {
  auto n = normalize_address(host);
  return n && !is_wildcard_address(*n) ? host : std::string();
}

bool owner_expected(const std::vector<std::string>& processes, const std::string& comm) {
  if (processes.empty()) return true;
  return std::any_of(processes.begin(), processes.end(),
                     [&](const std::string& p) { return p.substr(0, kCommLen) == comm; });
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

class ListeningSocketsCheck final : public Check {
 public:
  explicit ListeningSocketsCheck(std::vector<ExpectedListener> expected)
      : expected_(std::move(expected)), cache_(std::make_shared<OwnerCache>()) {
    for (const auto& e : expected_) options_.ports.push_back(e.port);
  }

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    // Only the expected ports' owners are looked up, and last run's owners first: a full
    // walk of /proc/*/fd every second cost more than every other check together.
    ScanOptions options = options_;
    options.cache = cache_.get();
    auto job = [options, cache = cache_] { return scan_listening_sockets(options); };
    ListenScan scan = co_await offload(ctx.worker, std::move(job));
    co_return evaluate_listening_sockets(expected_, scan);
  }

 private:
  std::vector<ExpectedListener> expected_;
  ScanOptions options_;
  std::shared_ptr<OwnerCache> cache_;  // shared with a scan that outlives a cancelled run
};

}  // namespace

std::string format_endpoint(const std::string& address, int port) {
  if (address.empty()) return "*:" + std::to_string(port);
  if (address.find(':') != std::string::npos) {
    return "[" + address + "]:" + std::to_string(port);
  }
  return address + ":" + std::to_string(port);
}

std::vector<ExpectedListener> default_expected_listeners(const Config& config) {
  std::vector<ExpectedListener> out;
  const std::string& me = config.node_address;

  // etcd: is this node a member, and on which ports?
  bool etcd_here = false;
  int client_port = 2379, peer_port = 2380;
  auto port_for_me = [&](const std::vector<std::string>& urls, int& port) {
    for (const auto& u : urls) {
      if (me.empty() || same_host(host_of(u), me)) {
        port = port_of(u, port);
        return true;
      }
    }
    return false;
  };
  for (const auto& m : config.etcd_members) {
    bool by_name = !config.node_name.empty() && m.name == config.node_name;
    bool peer = !me.empty() && port_for_me(m.peer_urls, peer_port);
    bool client = !me.empty() && port_for_me(m.client_urls, client_port);
    if (by_name || peer || client) {
      etcd_here = true;
      if (me.empty()) {  // no address to pick by: take the member's own ports
        port_for_me(m.peer_urls, peer_port);
        port_for_me(m.client_urls, client_port);
      }
      break;
    }
  }
  for (const auto& e : config.etcd_endpoints) {
    const std::string host = host_of(e);
    if (!me.empty() && same_host(host, me)) {
      etcd_here = true;
      client_port = port_of(e, client_port);
      break;
    }
    if (me.empty() || is_loopback_host(host)) etcd_here = true;
  }
  if (etcd_here) {
    out.push_back({"etcd-client", me, client_port, {"etcd"}});
    out.push_back({"etcd-peer", me, peer_port, {"etcd"}});
  }

  if (!config.pg_data_dir.empty() || !config.patroni_url.empty()) {
    const int port = config.pg_listen.empty() ? 5432 : port_of(config.pg_listen, 5432);
    const std::string addr = !me.empty() ? me : concrete_ip(host_of(config.pg_listen));
    out.push_back({"postgresql", addr, port, {"postgres"}});
  }
  if (!config.patroni_url.empty()) {
    const std::string addr = !me.empty() ? me : concrete_ip(host_of(config.patroni_url));
    // Installed as a script, Patroni's comm is "patroni"; run as `python3 -m` it is "python3".
    out.push_back({"patroni-api", addr, port_of(config.patroni_url, 8008), {"patroni", "python3"}});
  }
  return out;
}

std::vector<ExpectedListener> parse_listening_sockets_params(YamlMap& params,
                                                             const Config& config) {
  auto items = params.map_list("expect");
  if (!items) return default_expected_listeners(config);
  if (items->empty()) {
    params.fail("expect", "is empty; list listeners as {name, address, port, process}");
  }
  std::vector<ExpectedListener> out;
  for (auto& m : *items) {
    ExpectedListener e;
    auto port = m.integer("port", 1, 65535);
    if (!port) m.fail_here("needs `port` (1-65535)");
    e.port = static_cast<int>(*port);
    if (auto a = m.str("address")) {
      if (!normalize_address(*a)) {
        m.fail("address", "expected an IP address such as 127.0.1.3 or ::1, got \"" + *a + "\"");
      }
      e.address = *a;
      if (e.address.size() > 2 && e.address.front() == '[') {
        e.address = e.address.substr(1, e.address.size() - 2);
      }
    } else {
      e.address = config.node_address;
    }
    if (auto p = m.str_list("process", /*allow_comma_string=*/true)) e.processes = *p;
    if (auto n = m.str("name"); n && !n->empty()) {
      e.name = *n;
    } else {
      e.name = e.processes.empty() ? "port " + std::to_string(e.port) : e.processes.front();
    }
    m.finish();
    out.push_back(std::move(e));
  }
  return out;
}

CheckResult evaluate_listening_sockets(const std::vector<ExpectedListener>& expected,
                                       const ListenScan& scan) {
  json evidence = {
      {"listeners", json::array()}, {"notes", scan.notes}, {"proc_tables_read", scan.tables_read}};
  if (scan.tables_read == 0) {
    return CheckResult::make(
        Status::unknown,
        "cannot read the socket tables: " + (scan.notes.empty() ? "no reason" : scan.notes[0]),
        std::move(evidence));
  }
  if (expected.empty()) {
    return CheckResult::make(Status::passing,
                             "no listeners expected: no etcd, PostgreSQL or Patroni configured "
                             "on this node (list them under expect)",
                             std::move(evidence));
  }

  std::vector<std::string> missing, wrong, present;
  for (const auto& e : expected) {
    const std::string where = e.name + " " + format_endpoint(e.address, e.port);
    json item = {{"name", e.name},
                 {"address", e.address},
                 {"port", e.port},
                 {"processes", e.processes},
                 {"found", nullptr}};
    const ListeningSocket* s = find_listener(scan.sockets, e.address, e.port);
    if (!s) {
      // Say where the port is open instead, if anywhere: "open on 127.0.0.1 only".
      std::vector<std::string> elsewhere;
      for (const auto& other : scan.sockets) {
        if (other.port == e.port) elsewhere.push_back(other.address);
      }
      std::string text = where + " not listening";
      if (!elsewhere.empty()) {
        text += " (port " + std::to_string(e.port) + " is open on " + join(elsewhere, ", ") + ")";
      }
      missing.push_back(text);
      item["state"] = "missing";
      evidence["listeners"].push_back(std::move(item));
      continue;
    }
    item["found"] = {{"address", s->address},
                     {"port", s->port},
                     {"inode", s->inode},
                     {"pid", s->pid == 0 ? json(nullptr) : json(s->pid)},
                     {"comm", s->comm.empty() ? json(nullptr) : json(s->comm)}};
    if (s->pid != 0 && !owner_expected(e.processes, s->comm)) {
      wrong.push_back(where + " is held by " + s->comm + " (pid " + std::to_string(s->pid) +
                      "), expected " + join(e.processes, " or "));
      item["state"] = "wrong_process";
    } else {
      item["state"] = s->pid == 0 ? "present_owner_unknown" : "present";
      present.push_back(where + (s->comm.empty() ? "" : " (" + s->comm + ")"));
    }
    evidence["listeners"].push_back(std::move(item));
  }

  if (!missing.empty()) {
    std::string msg = join(missing, "; ");
    if (!wrong.empty()) msg += " (+" + std::to_string(wrong.size()) + " held by another process)";
    if (!scan.complete) {
      // The listener may be in the table we could not read.
      return CheckResult::make(Status::unknown, msg + ", but " + join(scan.notes, "; "),
                               std::move(evidence));
    }
    return CheckResult::make(Status::critical, msg, std::move(evidence));
  }
  if (!wrong.empty())
    return CheckResult::make(Status::warning, join(wrong, "; "), std::move(evidence));
  return CheckResult::make(
      Status::passing,
      std::to_string(present.size()) + " expected listeners present: " + join(present, ", "),
      std::move(evidence));
}

std::unique_ptr<Check> make_listening_sockets_check(YamlMap& params, const Config& config) {
  return std::make_unique<ListeningSocketsCheck>(parse_listening_sockets_params(params, config));
}

}  // namespace fener
