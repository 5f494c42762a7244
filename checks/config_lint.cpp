#include "checks/config_lint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <set>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "src/procnet.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

constexpr std::size_t kMaxEnvFileBytes = 1 << 20;

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

std::string trimmed(std::string s) {
  s.erase(0, s.find_first_not_of(" \t"));
  s.erase(s.find_last_not_of(" \t") + 1);
  return s;
}

bool same_host(const std::string& a, const std::string& b) {
  auto na = normalize_address(a), nb = normalize_address(b);
  return na && nb ? *na == *nb : a == b;
}

std::string host_port(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

// etcd reads boolean flags with Go's strconv.ParseBool.
std::optional<bool> go_bool(const std::string& v) {
  if (v == "1" || v == "t" || v == "T" || v == "true" || v == "TRUE" || v == "True") return true;
  if (v == "0" || v == "f" || v == "F" || v == "false" || v == "FALSE" || v == "False") {
    return false;
  }
  return std::nullopt;
}

// URLs compared as etcd would after parsing: case of scheme/host and a final '/' ignored.
std::set<std::string> url_set(const std::vector<std::string>& urls) {
  std::set<std::string> out;
  for (const auto& u : urls) {
    auto p = parse_url(u);
    if (!p) {
      out.insert(u);
      continue;
    }
    std::string host = p->host;
    std::transform(host.begin(), host.end(), host.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (auto n = normalize_address(host)) host = *n;
    out.insert(p->scheme + "://" + host_port(host, p->port) + (p->path == "/" ? "" : p->path));
  }
  return out;
}

std::string first_line(const std::string& text) {
  auto nl = text.find('\n');
  return nl == std::string::npos ? text : text.substr(0, nl) + " ...";
}

// A member as far as matching Patroni's hosts goes: its name and the hosts of its URLs.
struct KnownMember {
  std::string name;
  std::vector<std::string> hosts;
  std::string client;  // host:port Patroni should list, "" when unknown
};

std::vector<KnownMember> known_members(const Config& config, const ConfigLintInputs& inputs) {
  std::vector<KnownMember> out;
  auto client_of = [](const std::vector<std::string>& clients,
                      const std::vector<std::string>& peers) -> std::string {
    for (const auto& u : clients) {
      if (auto p = parse_url(u)) return host_port(p->host, p->port ? p->port : 2379);
    }
    for (const auto& u : peers) {
      if (auto p = parse_url(u)) return host_port(p->host, 2379);
    }
    return "";
  };
  auto hosts_of = [](const std::vector<std::string>& a, const std::vector<std::string>& b) {
    std::vector<std::string> hosts;
    for (const auto* list : {&a, &b}) {
      for (const auto& u : *list) {
        if (auto p = parse_url(u)) hosts.push_back(p->host);
      }
    }
    return hosts;
  };
  if (!config.etcd_members.empty()) {
    for (const auto& m : config.etcd_members) {
      out.push_back(
          {m.name, hosts_of(m.peer_urls, m.client_urls), client_of(m.client_urls, m.peer_urls)});
    }
    return out;
  }
  for (const auto& f : inputs.env_files) {
    if (f.state != EnvFileRead::State::ok) continue;
    const EnvEntry* ic = f.parsed.find("ETCD_INITIAL_CLUSTER");
    if (!ic) continue;
    InitialCluster cluster = parse_initial_cluster(ic->value);
    for (const auto& name : cluster.names()) {
      auto peers = cluster.urls_of(name);
      out.push_back({name, hosts_of(peers, {}), client_of({}, peers)});
    }
    break;
  }
  return out;
}

class ConfigLintCheck final : public Check {
 public:
  ConfigLintCheck(std::shared_ptr<const Config> config, int cert_warning_days)
      : config_(std::move(config)), cert_warning_days_(cert_warning_days) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    // Named first: GCC 12 destroys a capturing lambda made inside a co_await expression
    // twice (the shared_ptr would be released one time too many).
    auto job = [config = config_, days = cert_warning_days_] {
      return read_config_lint_inputs(*config, days);
    };
    ConfigLintInputs inputs = co_await offload(ctx.worker, std::move(job));
    co_return evaluate_config_lint(*config_, inputs);
  }

 private:
  std::shared_ptr<const Config> config_;
  int cert_warning_days_;
};

}  // namespace

std::string describe(const LintFinding& f) {
  std::string where = f.file;
  if (!where.empty() && f.line > 0) where += ":" + std::to_string(f.line);
  return where.empty() ? f.message : where + ": " + f.message;
}

EnvFileRead read_env_file(const std::string& path) {
  EnvFileRead r;
  r.path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      r.state = EnvFileRead::State::missing;
    } else {
      r.state = EnvFileRead::State::error;
      r.error = std::strerror(errno);
    }
    return r;
  }
  std::string text;
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r.state = EnvFileRead::State::error;
      r.error = std::strerror(errno);
      ::close(fd);
      return r;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxEnvFileBytes) {
      r.state = EnvFileRead::State::error;
      r.error = "larger than 1 MiB, not an environment file";
      ::close(fd);
      return r;
    }
  }
  ::close(fd);
  r.state = EnvFileRead::State::ok;
  r.parsed = parse_env_file(text);
  return r;
}

ConfigLintInputs read_config_lint_inputs(const Config& config, int cert_warning_days) {
  ConfigLintInputs in;
  in.tls = lint_tls_files(config.tls_files, std::time(nullptr), cert_warning_days, &in.tls_checked);
  for (const auto& path : config.etcd_env_files) in.env_files.push_back(read_env_file(path));
  struct stat st {};
  if (!config.patroni_config.empty() && ::stat(config.patroni_config.c_str(), &st) == 0)
    in.patroni_config_mode = static_cast<int>(st.st_mode & 07777);
  if (!config.patroni_config.empty() && !config.patroni_dcs.empty()) {
    // Only for the line number in messages: failure just leaves it unknown.
    try {
      YAML::Node root = YAML::LoadFile(config.patroni_config);
      YAML::Node dcs = root[config.patroni_dcs];
      if (dcs.IsMap()) {
        for (const auto& kv : dcs) {
          const std::string k = kv.first.Scalar();
          if (k == "host" || k == "hosts") in.patroni_hosts_line = kv.first.Mark().line + 1;
        }
      }
    } catch (const std::exception&) {
    }
  }
  return in;
}

std::vector<LintFinding> lint_patroni_mode(const Config& config, const ConfigLintInputs& inputs) {
  if (config.patroni_config.empty() || inputs.patroni_config_mode < 0 ||
      !(inputs.patroni_config_mode & 0004))
    return {};
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o",
                static_cast<unsigned>(inputs.patroni_config_mode) & 07777u);
  return {{Status::warning, config.patroni_config, 0, "",
           std::string("readable by everyone (mode ") + mode +
               ") though it holds Patroni's REST API and PostgreSQL passwords: chmod 600 " +
               config.patroni_config + " (or 640 with a group fener is in)"}};
}

std::vector<LintFinding> lint_patroni(const Config& config, const ConfigLintInputs& inputs) {
  std::vector<LintFinding> out;
  if (config.patroni_dcs.empty() || config.patroni_etcd_hosts.empty()) return out;
  const std::string file = config.patroni_config.empty() ? "patroni.yml" : config.patroni_config;
  const std::string key =
      config.patroni_dcs + (config.patroni_etcd_uses_host_key ? ".host" : ".hosts");
  const auto& hosts = config.patroni_etcd_hosts;
  auto add = [&](Status s, std::string msg) {
    out.push_back({s, file, inputs.patroni_hosts_line, key, std::move(msg)});
  };

  const std::vector<KnownMember> members = known_members(config, inputs);
  std::vector<std::string> all_clients;
  for (const auto& m : members) {
    if (!m.client.empty()) all_clients.push_back(m.client);
  }
  const std::string suggestion =
      "write hosts: " +
      join(all_clients.size() == members.size() && !members.empty() ? all_clients : hosts, ",");

  if (config.patroni_etcd_uses_host_key && hosts.size() > 1) {
    add(Status::critical, key + " lists " + std::to_string(hosts.size()) + " addresses (" +
                              join(hosts, ", ") + ") but Patroni's host takes one address; " +
                              suggestion);
    return out;
  }

  if (members.empty()) {
    if (config.patroni_etcd_uses_host_key) {
      add(Status::warning,
          key + " names one etcd member (" + hosts.front() +
              "): the cluster depends on it alone; list every member under hosts:");
    }
    return out;
  }

  // Count the members Patroni can reach, matching by address where the URLs tell.
  const std::size_t total = members.size();
  std::size_t reached = 0;
  bool any_ip = false;
  for (const auto& h : hosts) any_ip = any_ip || normalize_address(host_of(h)).has_value();
  for (const auto& m : members) {
    bool hit = std::any_of(hosts.begin(), hosts.end(), [&](const std::string& h) {
      return std::any_of(m.hosts.begin(), m.hosts.end(),
                         [&](const std::string& mh) { return same_host(host_of(h), mh); });
    });
    if (hit) ++reached;
  }
  if (reached == 0 && !any_ip) reached = std::min(hosts.size(), total);  // names: can't match
  if (reached < total) {
    add(Status::critical, key + " lists " + join(hosts, ",") + ": the cluster depends on " +
                              std::to_string(reached) + " of " + std::to_string(total) +
                              " etcd members; " + suggestion);
  }
  return out;
}

std::vector<LintFinding> lint_etcd_env_file(const Config& config, const EnvFileRead& r) {
  std::vector<LintFinding> out;
  auto add = [&](Status s, int line, std::string key, std::string msg) {
    out.push_back({s, r.path, line, std::move(key), std::move(msg)});
  };
  if (r.state == EnvFileRead::State::missing) {
    if (config.etcd_env_files_explicit) {
      add(Status::critical, 0, "", "does not exist (listed under etcd.env_files)");
    }
    return out;
  }
  if (r.state == EnvFileRead::State::error) {
    add(Status::unknown, 0, "", "cannot be read: " + r.error);
    return out;
  }
  const EnvFile& f = r.parsed;

  const EnvIgnored* yaml_v2 = nullptr;
  for (const auto& ig : f.ignored) {
    std::string key;
    if (looks_like_yaml(ig.text)) {
      key = etcd_env_name_for_flag(ig.text.substr(0, ig.text.find(':')));
      if (key == "ETCD_ENABLE_V2") yaml_v2 = &ig;
    }
    add(Status::warning, ig.line, key, "'" + first_line(ig.text) + "' is ignored: " + ig.reason);
  }
  for (const auto& w : f.warnings) add(Status::warning, w.line, "", w.reason);

  const bool has_etcd = std::any_of(f.entries.begin(), f.entries.end(),
                                    [](const EnvEntry& e) { return e.key.starts_with("ETCD_"); });
  if (!has_etcd) {
    // A distribution's stock file is all comments: only an operator's list makes it an error.
    if (config.etcd_env_files_explicit) add(Status::critical, 0, "", "sets no ETCD_ variable");
    return out;
  }

  const EnvEntry* name = f.find("ETCD_NAME");
  const bool has_name = name && !name->value.empty();
  if (!has_name) {
    add(Status::critical, name ? name->line : 0, "ETCD_NAME",
        "ETCD_NAME is not set: etcd names the member \"default\", which no "
        "ETCD_INITIAL_CLUSTER of the cluster lists");
  }

  const EnvEntry* ic = f.find("ETCD_INITIAL_CLUSTER");
  InitialCluster cluster;
  if (!ic || trimmed(ic->value).empty()) {
    add(Status::critical, ic ? ic->line : 0, "ETCD_INITIAL_CLUSTER",
        "ETCD_INITIAL_CLUSTER is not set: etcd would bootstrap a one-member cluster of its own");
  } else {
    cluster = parse_initial_cluster(ic->value);
    for (const auto& e : cluster.errors) {
      add(Status::critical, ic->line, "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_CLUSTER: " + e);
    }
    if (has_name && cluster.urls_of(name->value).empty()) {
      add(Status::critical, name->line, "ETCD_NAME",
          "ETCD_NAME=" + quoted(name->value) + " is not in ETCD_INITIAL_CLUSTER (line " +
              std::to_string(ic->line) + " names " + join(cluster.names(), ", ") + ")");
    }
  }

  // The peer URLs this member advertises must be the ones the initial cluster gives it.
  if (has_name && !cluster.urls_of(name->value).empty()) {
    const auto given = cluster.urls_of(name->value);
    const EnvEntry* adv = f.find("ETCD_INITIAL_ADVERTISE_PEER_URLS");
    const auto advertised =
        adv ? split_url_list(adv->value) : std::vector<std::string>{"http://localhost:2380"};
    if (url_set(advertised) != url_set(given)) {
      add(Status::critical, adv ? adv->line : 0, "ETCD_INITIAL_ADVERTISE_PEER_URLS",
          "ETCD_INITIAL_ADVERTISE_PEER_URLS is " + join(advertised, ",") +
              (adv ? "" : " (not set: etcd's default)") + " but ETCD_INITIAL_CLUSTER (line " +
              std::to_string(ic->line) + ") gives " + name->value + "=" + join(given, ","));
    }
  }

  if (!config.node_address.empty()) {
    const std::string& me = config.node_address;
    for (const char* key : {"ETCD_ADVERTISE_CLIENT_URLS", "ETCD_INITIAL_ADVERTISE_PEER_URLS"}) {
      const EnvEntry* e = f.find(key);
      if (!e) {
        if (std::string_view(key) == "ETCD_ADVERTISE_CLIENT_URLS") {
          add(Status::warning, 0, key,
              std::string(key) +
                  " is not set: etcd advertises http://localhost:2379, not this "
                  "node's address " +
                  me);
        }
        continue;  // a missing peer URL was judged above
      }
      std::vector<std::string> foreign;
      for (const auto& u : split_url_list(e->value)) {
        auto p = parse_url(u);
        if (!p) {
          foreign.push_back(u + " (not a URL)");
        } else if (!same_host(p->host, me)) {
          foreign.push_back(u);
        }
      }
      if (!foreign.empty()) {
        add(Status::warning, e->line, key,
            std::string(key) + " advertises " + join(foreign, ",") + ", not this node's address " +
                me);
      }
    }
  }

  const EnvEntry* token = f.find("ETCD_INITIAL_CLUSTER_TOKEN");
  if (!token || trimmed(token->value).empty()) {
    add(Status::critical, token ? token->line : 0, "ETCD_INITIAL_CLUSTER_TOKEN",
        "ETCD_INITIAL_CLUSTER_TOKEN is " + std::string(token ? "empty" : "not set") +
            ": every member must be bootstrapped with the same token");
  }

  if (config.patroni_dcs == "etcd") {
    const EnvEntry* v2 = f.find("ETCD_ENABLE_V2");
    if (!v2) {
      std::string hint;
      if (yaml_v2) {
        hint += "; line " + std::to_string(yaml_v2->line) + " '" + first_line(yaml_v2->text) +
                "' is YAML and has no effect";
      }
      if (const EnvEntry* api = f.find("ETCDCTL_API")) {
        hint += "; ETCDCTL_API=" + api->value + " (line " + std::to_string(api->line) +
                ") only affects etcdctl";
      }
      add(Status::critical, yaml_v2 ? yaml_v2->line : 0, "ETCD_ENABLE_V2",
          "ETCD_ENABLE_V2 is not set but Patroni's etcd: section needs etcd's v2 API: write "
          "ETCD_ENABLE_V2=\"true\"" +
              hint);
    } else if (go_bool(v2->value) != true) {
      add(Status::critical, v2->line, "ETCD_ENABLE_V2",
          "ETCD_ENABLE_V2=" + quoted(v2->value) +
              " but Patroni's etcd: section needs etcd's v2 API: write ETCD_ENABLE_V2=\"true\"");
    }
  }
  return out;
}

std::vector<LintFinding> lint_env_files_agree(const std::vector<EnvFileRead>& files) {
  std::vector<LintFinding> out;
  std::vector<const EnvFileRead*> ok;
  for (const auto& f : files) {
    if (f.state == EnvFileRead::State::ok) ok.push_back(&f);
  }
  if (ok.size() < 2) return out;

  // Effective assignments (last wins), in first-appearance order.
  auto effective = [](const EnvFile& f) {
    std::vector<const EnvEntry*> v;
    for (const auto& e : f.entries) {
      if (f.find(e.key) == &e) v.push_back(&e);
    }
    return v;
  };
  const EnvFileRead& base = *ok[0];
  const auto base_entries = effective(base.parsed);
  for (std::size_t i = 1; i < ok.size(); ++i) {
    const EnvFileRead& other = *ok[i];
    const auto other_entries = effective(other.parsed);
    auto where = [](const EnvFileRead& f, const EnvEntry& e) {
      return f.path + ":" + std::to_string(e.line);
    };
    if (base_entries.empty() != other_entries.empty()) {
      const EnvFileRead& empty = base_entries.empty() ? base : other;
      const EnvFileRead& full = base_entries.empty() ? other : base;
      out.push_back(
          {Status::warning, empty.path, 0, "",
           "sets none of the " +
               std::to_string((base_entries.empty() ? other_entries : base_entries).size()) +
               " variables that " + full.path + " sets: the etcd environment files disagree"});
      continue;
    }
    for (const EnvEntry* b : base_entries) {
      const EnvEntry* o = other.parsed.find(b->key);
      if (!o) {
        out.push_back({Status::warning, base.path, b->line, b->key,
                       b->key + " is set in " + where(base, *b) + " but not in " + other.path});
      } else if (o->value != b->value) {
        out.push_back({Status::warning, base.path, b->line, b->key,
                       b->key + " differs: " + where(base, *b) + " " + quoted(b->value) + ", " +
                           where(other, *o) + " " + quoted(o->value)});
      }
    }
    for (const EnvEntry* o : other_entries) {
      if (!base.parsed.find(o->key)) {
        out.push_back({Status::warning, other.path, o->line, o->key,
                       o->key + " is set in " + where(other, *o) + " but not in " + base.path});
      }
    }
  }
  return out;
}

CheckResult evaluate_config_lint(const Config& config, const ConfigLintInputs& inputs) {
  std::vector<LintFinding> findings = lint_patroni(config, inputs);
  const auto mode_findings = lint_patroni_mode(config, inputs);
  findings.insert(findings.end(), mode_findings.begin(), mode_findings.end());
  std::vector<std::string> checked, absent;
  if (!config.patroni_config.empty()) checked.push_back(config.patroni_config);
  for (const auto& f : inputs.env_files) {
    auto more = lint_etcd_env_file(config, f);
    findings.insert(findings.end(), more.begin(), more.end());
    (f.state == EnvFileRead::State::missing ? absent : checked).push_back(f.path);
  }
  auto agree = lint_env_files_agree(inputs.env_files);
  findings.insert(findings.end(), agree.begin(), agree.end());
  findings.insert(findings.end(), inputs.tls.begin(), inputs.tls.end());
  checked.insert(checked.end(), inputs.tls_checked.begin(), inputs.tls_checked.end());

  json evidence = {{"checked", checked}, {"absent", absent}, {"findings", json::array()}};
  for (const auto& f : findings) {
    evidence["findings"].push_back({{"severity", to_string(f.severity)},
                                    {"file", f.file},
                                    {"line", f.line > 0 ? json(f.line) : json(nullptr)},
                                    {"key", f.key.empty() ? json(nullptr) : json(f.key)},
                                    {"message", f.message}});
  }

  if (findings.empty()) {
    if (checked.empty()) {
      return CheckResult::make(
          Status::passing,
          "nothing to check: no patroni.yml and no etcd environment file" +
              (absent.empty() ? std::string() : " (" + join(absent, ", ") + " absent)"),
          std::move(evidence));
    }
    return CheckResult::make(Status::passing, "no problems in " + join(checked, ", "),
                             std::move(evidence));
  }
  const LintFinding* worst_finding = &findings.front();
  for (const auto& f : findings) {
    if (severity(f.severity) > severity(worst_finding->severity)) worst_finding = &f;
  }
  std::string msg = describe(*worst_finding);
  if (findings.size() > 1) msg += " (+" + std::to_string(findings.size() - 1) + " more)";
  return CheckResult::make(worst_finding->severity, std::move(msg), std::move(evidence));
}

std::unique_ptr<Check> make_config_lint_check(YamlMap& params, const Config& config) {
  const auto days = params.integer("cert_warning_days", 0, 3650).value_or(kDefaultCertWarningDays);
  auto copy = std::make_shared<Config>(config);
  copy->checks.clear();  // not needed here, and they hold YAML trees
  return std::make_unique<ConfigLintCheck>(std::move(copy), static_cast<int>(days));
}

}  // namespace fener
