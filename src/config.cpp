#include "src/config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "checks/patroni_node.hpp"
#include "fener_default_rules.hpp"
#include "src/envfile.hpp"
#include "src/haproxy_cfg.hpp"

namespace fener {

namespace {

bool file_exists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path, 0, 0, "", "cannot read file: " + std::string(strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_wildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "*";
}

// "a,b:5432" (PostgreSQL listen) -> first concrete host and the port. A port that is not
// a number leaves the default, in both forms: a stray character in patroni.yml must not
// throw out of discovery.
std::pair<std::string, int> split_listen(const std::string& listen, int default_port) {
  std::string hosts = listen;
  int port = default_port;
  auto port_after = [&](std::size_t colon) {
    try {
      return std::stoi(listen.substr(colon + 1));
    } catch (...) {
      return default_port;
    }
  };
  const auto colon = listen.rfind(':');
  if (colon != std::string::npos && listen.find(']') == std::string::npos &&
      std::count(listen.begin(), listen.end(), ':') == 1) {
    hosts = listen.substr(0, colon);
    port = port_after(colon);
  } else if (colon != std::string::npos && listen.find(']') != std::string::npos &&
             colon > listen.find(']')) {
    hosts = listen.substr(0, colon);
    port = port_after(colon);
  }
  std::string first;
  std::stringstream ss(hosts);
  std::string h;
  while (std::getline(ss, h, ',')) {
    h.erase(0, h.find_first_not_of(" \t"));
    h.erase(h.find_last_not_of(" \t") + 1);
    if (!h.empty() && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (first.empty() || (is_wildcard(first) && !is_wildcard(h))) first = h;
  }
  return {first, port};
}

std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

// A file setting of patroni.yml's, with where it came from ("/etc/patroni.yml ctl.cacert").
bool take_file(YamlMap& m, const std::string& key, std::string& file, std::string& source) {
  auto v = m.str(key);
  if (!v || v->empty()) return false;
  file = *v;
  source = m.file() + " " + m.key_path(key);
  return true;
}

// Patroni's REST API as patronictl reaches it (Patroni's request.py): the CA is ctl.cacert,
// else restapi.cafile; the client certificate and key ctl.certfile/keyfile, else restapi's
// (the server's own certificate doubles as the client one); ctl.insecure switches
// verification off, except that with a client certificate the chain is still verified and
// only the host name is not.
void discover_patroni_tls(YamlMap& root, const std::string& path, Config& cfg) {
  auto api = root.map("restapi");
  auto ctl = root.map("ctl");
  TlsSettings& t = cfg.patroni_tls;
  TlsFileSet server;
  server.what = "Patroni REST API certificate";
  server.source = path + " restapi";
  if (api) {
    std::string ignored;
    take_file(*api, "certfile", server.cert_file, ignored);
    take_file(*api, "keyfile", server.key_file, ignored);
    take_file(*api, "cafile", server.ca_file, ignored);
  }
  if (!(ctl && take_file(*ctl, "cacert", t.ca_file, t.ca_source)) && api)
    take_file(*api, "cafile", t.ca_file, t.ca_source);
  if (!(ctl && take_file(*ctl, "certfile", t.cert_file, t.cert_source)) && api)
    take_file(*api, "certfile", t.cert_file, t.cert_source);
  if (!(ctl && take_file(*ctl, "keyfile", t.key_file, t.key_source)) && api)
    take_file(*api, "keyfile", t.key_file, t.key_source);
  const bool insecure = ctl && ctl->boolean("insecure").value_or(false);
  if (insecure) {
    t.verify_peer = !t.cert_file.empty();
    t.verify_host = false;
  }
  if (!server.cert_file.empty() || !server.ca_file.empty()) cfg.tls_files.push_back(server);
}

// Patroni's etcd client: etcd(3).cacert, cert and key (the key may be inside cert).
void discover_etcd_tls(YamlMap& etcd, Config& cfg) {
  TlsSettings& t = cfg.etcd_tls;
  take_file(etcd, "cacert", t.ca_file, t.ca_source);
  take_file(etcd, "cert", t.cert_file, t.cert_source);
  take_file(etcd, "key", t.key_file, t.key_source);
}

// What patroni.yml tells us. Patroni accepts far more keys than fener reads: only the
// keys used here are type-checked, the rest are none of our business.
void discover_patroni(const std::string& path, Config& cfg) {
  YamlMap root(load_yaml_file(path), path, "");
  discover_patroni_tls(root, path, cfg);
  cfg.patroni_config = path;
  if (auto v = root.str("scope")) cfg.scope = *v;
  if (auto v = root.str("name")) cfg.node_name = *v;

  if (auto api = root.map("restapi")) {
    std::string addr;
    if (auto v = api->str("connect_address")) addr = *v;
    auto listen = api->str("listen");
    if (addr.empty() && listen) addr = *listen;
    if (addr.empty()) api->fail_here("needs connect_address or listen to find Patroni's REST API");
    auto [host, port] = split_listen(addr, 8008);
    if (is_wildcard(host)) host = "127.0.0.1";
    const bool tls = api->has("certfile");
    cfg.patroni_url =
        std::string(tls ? "https" : "http") + "://" + url_host(host) + ":" + std::to_string(port);
    if (cfg.node_address.empty() && !is_wildcard(host)) cfg.node_address = host;
    if (auto auth = api->map("authentication")) {
      if (auto u = auth->str("username")) cfg.patroni_username = *u;
      if (auto p = auth->str("password")) cfg.patroni_password = *p;
    }
  } else {
    cfg.patroni_url = "http://127.0.0.1:8008";  // Patroni's own default
  }

  for (const char* section : {"etcd", "etcd3"}) {
    auto etcd = root.map(section);
    if (!etcd) continue;
    cfg.patroni_dcs = section;
    const std::string proto = etcd->str("protocol").value_or("http");
    discover_etcd_tls(*etcd, cfg);
    if (auto hosts = etcd->str_list("hosts", /*allow_comma_string=*/true)) {
      cfg.patroni_etcd_hosts = *hosts;
    } else if (auto host = etcd->str("host")) {
      cfg.patroni_etcd_uses_host_key = true;
      // Kept as written: config_lint reports several addresses under `host`.
      std::stringstream ss(*host);
      std::string h;
      while (std::getline(ss, h, ',')) {
        h.erase(0, h.find_first_not_of(" \t"));
        h.erase(h.find_last_not_of(" \t") + 1);
        if (!h.empty()) cfg.patroni_etcd_hosts.push_back(h);
      }
    } else if (auto urls = etcd->str_list(etcd->has("urls") ? "urls" : "url", true)) {
      for (const auto& u : *urls) cfg.etcd_endpoints.push_back(u);
    }
    for (const auto& h : cfg.patroni_etcd_hosts) cfg.etcd_endpoints.push_back(proto + "://" + h);
    break;
  }

  if (auto pg = root.map("postgresql")) {
    if (auto v = pg->str("data_dir")) cfg.pg_data_dir = *v;
    if (auto v = pg->str("bin_dir")) cfg.pg_bin_dir = *v;
    std::string listen;
    if (auto v = pg->str("listen")) listen = *v;
    auto [host, port] = split_listen(listen, 5432);
    if (is_wildcard(host)) {
      if (auto ca = pg->str("connect_address")) host = split_listen(*ca, port).first;
    }
    if (is_wildcard(host)) host = cfg.node_address;
    cfg.pg_listen =
        (host.empty() ? std::string("127.0.0.1") : url_host(host)) + ":" + std::to_string(port);
  }
}

// What the etcd environment file tells us (the HAProxy node has nothing else).
void discover_etcd_env(const std::string& path, Config& cfg) {
  const EnvFile env = parse_env_file(read_text(path));
  const EnvEntry* name = env.find("ETCD_NAME");
  const EnvEntry* initial = env.find("ETCD_INITIAL_CLUSTER");
  const EnvEntry* adv_client = env.find("ETCD_ADVERTISE_CLIENT_URLS");
  if (name && cfg.node_name.empty()) cfg.node_name = name->value;
  if (adv_client && cfg.node_address.empty()) {
    for (const auto& u : split_url_list(adv_client->value)) {
      auto parts = parse_url(u);
      if (parts && parts->host != "localhost" && parts->host.rfind("127.0.0.", 0) != 0) {
        cfg.node_address = parts->host;
        break;
      }
    }
  }
  // etcd's own certificates (client-facing and peer), for the certificate lint.
  for (auto [prefix, what] : {std::pair{"ETCD_", "etcd server certificate"},
                              std::pair{"ETCD_PEER_", "etcd peer certificate"}}) {
    const std::string p = prefix;
    const EnvEntry* cert = env.find(p + "CERT_FILE");
    const EnvEntry* key = env.find(p + "KEY_FILE");
    const EnvEntry* ca = env.find(p + "TRUSTED_CA_FILE");
    if (!cert || cert->value.empty()) continue;
    TlsFileSet set;
    set.what = what;
    set.cert_file = cert->value;
    set.key_file = key ? key->value : "";
    set.ca_file = ca ? ca->value : "";
    set.source = path + " " + p + "CERT_FILE";
    cfg.tls_files.push_back(std::move(set));
  }
  if (!initial || !cfg.etcd_members.empty()) return;
  const auto ic = parse_initial_cluster(initial->value);
  for (const auto& n : ic.names()) {
    EtcdMember m;
    m.name = n;
    m.peer_urls = ic.urls_of(n);
    if (name && n == name->value && adv_client) m.client_urls = split_url_list(adv_client->value);
    cfg.etcd_members.push_back(std::move(m));
  }
  if (cfg.etcd_endpoints.empty()) {
    // Clients are on the peer host at the client port unless told otherwise.
    for (const auto& m : cfg.etcd_members) {
      if (!m.client_urls.empty()) {
        cfg.etcd_endpoints.push_back(m.client_urls.front());
      } else if (!m.peer_urls.empty()) {
        if (auto p = parse_url(m.peer_urls.front()))
          cfg.etcd_endpoints.push_back(p->scheme + "://" + url_host(p->host) + ":2379");
      }
    }
  }
}

// What haproxy.cfg tells us: the stats socket and the backends of the cluster.
void discover_haproxy(const std::string& path, Config& cfg) {
  const HaproxyCfg h = parse_haproxy_cfg(read_text(path));
  cfg.haproxy.config = path;
  cfg.haproxy.socket = normalize_stats_socket(h.stats_socket);
  cfg.haproxy.primary_backends = h.backends_with(BackendRole::primary);
  cfg.haproxy.replica_backends = h.backends_with(BackendRole::replica);
}

bool valid_stats_socket(const std::string& s) {
  if (!s.empty() && s[0] == '/') return true;
  return stats_socket_is_tcp(s) && !host_of(s).empty();
}

}  // namespace

void read_check_timing(YamlMap& m, CheckTiming& t) {
  if (auto v = m.duration("interval", Duration{100})) t.interval = *v;
  if (auto v = m.duration("unhealthy_interval", Duration{100})) t.unhealthy_interval = *v;
  if (auto v = m.duration("timeout", Duration{10})) t.timeout = *v;
  if (auto v = m.duration("jitter", Duration{0})) t.jitter = *v;
  if (auto v = m.integer("rise", 1, 100)) t.rise = static_cast<int>(*v);
  if (auto v = m.integer("fall", 1, 100)) t.fall = static_cast<int>(*v);
}

namespace {

// Checks that apply to what this node runs, in display order.
std::vector<std::string> default_checks(const Config& c) {
  std::vector<std::string> out;
  if (!c.etcd_endpoints.empty()) out.insert(out.end(), {"etcd_health", "etcd_members"});
  if (!c.patroni_url.empty()) out.insert(out.end(), {"patroni_node", "patroni_cluster"});
  out.push_back("listening_sockets");
  if (!c.pg_data_dir.empty()) out.push_back("datadir");
  // Comparing with the leader's files needs the peers' shared token.
  if (!c.patroni_url.empty() && !c.peer_files.empty() && !c.api.token.empty())
    out.push_back("leader_files");
  if (!c.patroni_config.empty() || !c.etcd_env_files.empty() || !c.tls_files.empty())
    out.push_back("config_lint");
  // HAProxy in front of this cluster: named by the operator, or a haproxy.cfg with
  // backends that route to Patroni (a stock haproxy.cfg alone does not count).
  if (c.haproxy.explicit_config || !c.haproxy.primary_backends.empty() ||
      !c.haproxy.replica_backends.empty())
    out.push_back("haproxy");
  return out;
}

// fener.yaml's cacert/cert/key/verify under etcd: or patroni:, over what discovery found.
// An empty string switches a discovered file off; a named file must be readable now.
void read_tls_keys(YamlMap& m, TlsSettings& tls) {
  auto file_key = [&](const char* key, std::string& file, std::string& source) {
    auto v = m.str(key);
    if (!v) return;
    if (v->empty()) {
      file.clear();
      source.clear();
      return;
    }
    if (::access(v->c_str(), R_OK) != 0)
      m.fail(key, "cannot read " + *v + " (" + strerror(errno) + "); expected a readable PEM file");
    file = *v;
    source = m.file() + " " + m.key_path(key);
  };
  file_key("cacert", tls.ca_file, tls.ca_source);
  file_key("cert", tls.cert_file, tls.cert_source);
  file_key("key", tls.key_file, tls.key_source);
  if (auto v = m.boolean("verify")) tls.verify_peer = tls.verify_host = *v;
  if ((m.has("key") || m.has("cert")) && !tls.key_file.empty() && tls.cert_file.empty())
    m.fail("key", "a key without a certificate: set cert (the client certificate) too");
}

// The client certificates of etcd and Patroni join the list the certificate lint reads,
// unless the same files are listed already.
void add_tls_file_set(Config& cfg, const TlsSettings& t, const std::string& what) {
  if (t.ca_file.empty() && t.cert_file.empty()) return;
  TlsFileSet set;
  set.what = what;
  set.cert_file = t.cert_file;
  set.key_file = t.key_file;
  set.ca_file = t.ca_file;
  set.source = !t.cert_source.empty() ? t.cert_source : t.ca_source;
  for (const auto& f : cfg.tls_files) {
    if (f.cert_file == set.cert_file && f.key_file == set.key_file && f.ca_file == set.ca_file)
      return;
  }
  cfg.tls_files.push_back(std::move(set));
}

std::string octal_mode(mode_t mode) {
  char text[8];
  snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// What to say about a file holding a secret that everyone may read (as ssh and libpq
// refuse such key and password files); nullopt when others cannot read it. Group read is
// fine: a group such as fener's own may need it.
std::optional<std::string> world_readable_problem(const std::string& path, const struct stat& st,
                                                  const std::string& holding) {
  if (!(st.st_mode & S_IROTH)) return std::nullopt;
  return path + " holds " + holding + " and is readable by everyone (mode " +
         octal_mode(st.st_mode) + "): chmod 600 " + path + " (or 640 with a group)";
}

// The first line of a file holding a secret, which nobody but its owners may read.
std::string read_secret_line(YamlMap& m, const std::string& key, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) m.fail(key, "cannot read " + path + ": " + strerror(errno));
  if (auto problem = world_readable_problem(path, st, "a shared secret")) m.fail(key, *problem);
  std::ifstream in(path);
  if (!in) m.fail(key, "cannot read " + path + ": " + strerror(errno));
  std::string secret;
  std::getline(in, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  return secret;
}

std::string read_token_file(YamlMap& api, const std::string& path) {
  std::string token = read_secret_line(api, "token_file", path);
  if (token.size() < 16)
    api.fail("token_file", path + " must hold a token of at least 16 characters on its first line");
  return token;
}

// alerts.webhooks[]: one receiver each.
void read_webhook(YamlMap& m, AlertsConfig& alerts) {
  WebhookConfig w;
  auto name = m.str("name");
  if (!name || name->empty() ||
      name->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
    m.fail("name",
           "expected a name of lowercase letters, digits, _ or - (used in logs and metrics)");
  for (const auto& other : alerts.webhooks)
    if (other.name == *name) m.fail("name", "\"" + *name + "\" is used twice");
  w.name = *name;

  auto url = m.str("url");
  const auto parts = url ? parse_url(*url) : std::nullopt;
  if (!parts || (parts->scheme != "http" && parts->scheme != "https"))
    m.fail("url", "expected an http:// or https:// URL" +
                      (url ? ", got \"" + redact_url(*url) + "\"" : std::string()));
  w.url = *url;

  if (auto f = m.str("format")) {
    if (*f == "json") {
      w.format = WebhookFormat::fener;
    } else if (*f == "slack") {
      w.format = WebhookFormat::slack;
    } else if (*f == "alertmanager") {
      w.format = WebhookFormat::alertmanager;
    } else {
      m.fail("format", "expected json, slack or alertmanager, got \"" + *f + "\"");
    }
  }
  if (auto path = m.str("secret_file")) {
    if (w.format != WebhookFormat::fener)
      m.fail("secret_file", std::string("signatures are for format json only, this webhook is ") +
                                std::string(to_string(w.format)));
    w.secret = read_secret_line(m, "secret_file", *path);
    if (w.secret.size() < 16)
      m.fail("secret_file",
             *path + " must hold a secret of at least 16 characters on its first line");
    w.secret_source = *path;
  }
  if (auto kinds = m.str_list("events", true)) {
    if (kinds->empty()) m.fail("events", "expected check, remedy or both, got an empty list");
    w.check_events = w.remedy_events = false;
    for (const auto& k : *kinds) {
      if (k == "check") {
        w.check_events = true;
      } else if (k == "remedy") {
        w.remedy_events = true;
      } else {
        m.fail("events", "expected a list of check and remedy, got \"" + k + "\"");
      }
    }
  }
  if (auto v = m.str("min_severity")) {
    auto st = status_from_string(*v);
    if (!st)
      m.fail("min_severity", "expected passing, warning, unknown or critical, got \"" + *v + "\"");
    w.min_severity = *st;
  }
  if (auto v = m.duration("timeout", Duration{100})) {
    if (*v > std::chrono::minutes(5))
      m.fail("timeout", "must be at most 5m, got " + format_duration(*v));
    w.timeout = *v;
  }
  if (auto headers = m.map("headers")) {
    for (const auto& hname : headers->keys()) {
      auto value = headers->str(hname);
      std::string lower = hname;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (hname.empty() ||
          hname.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                  "!#$%&'*+-.^_`|~") != std::string::npos)
        headers->fail(hname, "expected a header name of letters, digits and -");
      if (lower == "content-type" || lower == "content-length" || lower == "host" ||
          lower.rfind("x-fener-", 0) == 0)
        headers->fail(hname, "fener sets this header itself");
      const std::string v = value.value_or("");
      if (v.find_first_of("\r\n") != std::string::npos || v.find('\0') != std::string::npos)
        headers->fail(hname, "a header value must be one line");
      w.headers.emplace_back(hname, v);
    }
    headers->finish();
  }
  m.finish();
  alerts.webhooks.push_back(std::move(w));
}

void read_alerts(YamlMap& a, AlertsConfig& alerts) {
  if (auto list = a.map_list("webhooks"))
    for (auto& m : *list) read_webhook(m, alerts);
  if (auto v = a.integer("queue_size", 1, 100000)) alerts.queue_size = static_cast<std::size_t>(*v);
  if (auto r = a.map("retry")) {
    if (auto v = r->duration("initial", Duration{10})) alerts.retry.initial = *v;
    if (auto v = r->duration("max", Duration{10})) alerts.retry.max = *v;
    if (auto v = r->integer("attempts", 1, 100)) alerts.retry.attempts = static_cast<int>(*v);
    if (alerts.retry.max < alerts.retry.initial)
      r->fail("max", "must be at least initial (" + format_duration(alerts.retry.initial) +
                         "), got " + format_duration(alerts.retry.max));
    r->finish();
  }
  if (auto v = a.duration("group_wait", Duration{0})) {
    if (*v > std::chrono::minutes(5))
      a.fail("group_wait", "must be at most 5m, got " + format_duration(*v));
    alerts.group_wait = *v;
  }
  if (auto v = a.duration("repeat_interval", std::chrono::seconds(1))) alerts.repeat_interval = *v;
  a.finish();
}

void read_api(YamlMap& api, Config& cfg) {
  if (auto v = api.str("listen")) {
    if (*v == "off" || v->empty()) {
      cfg.api.listen.clear();
    } else {
      if (host_of(*v).empty() || port_of(*v, 0) <= 0 || port_of(*v, 0) > 65535)
        api.fail("listen", "expected host:port such as 127.0.0.1:8009, or off, got \"" + *v + "\"");
      cfg.api.listen = *v;
    }
  }
  if (api.has("token") && api.has("token_file"))
    api.fail("token", "give either token or token_file, not both");
  if (auto v = api.str("token")) {
    if (v->size() < 16) api.fail("token", "expected a shared secret of at least 16 characters");
    cfg.api.token = *v;
    cfg.api.token_source = api.key_path("token") + " in " + api.file();
  }
  if (auto v = api.str("token_file")) {
    cfg.api.token = read_token_file(api, *v);
    cfg.api.token_source = *v;
  }
  if (auto v = api.integer("max_file_size", 1024, std::int64_t{1} << 30))
    cfg.api.max_file_size = static_cast<std::size_t>(*v);
  api.finish();
}

void read_agent(YamlMap& a, Config& cfg) {
  if (auto v = a.str("listen")) {
    if (*v == "off" || v->empty()) {
      cfg.agent.listen.clear();
    } else {
      if (host_of(*v).empty() || port_of(*v, 0) <= 0 || port_of(*v, 0) > 65535)
        a.fail("listen", "expected host:port such as 127.0.0.1:8010, or off, got \"" + *v + "\"");
      cfg.agent.listen = *v;
    }
  }
  if (auto v = a.str("default_role")) {
    static const std::set<std::string> roles = {"primary", "replica", "read-only", "any"};
    if (!roles.count(*v))
      a.fail("default_role", "expected primary, replica, read-only or any, got \"" + *v + "\"");
    cfg.agent.default_role = *v;
  }
  if (auto v = read_size_param(a, "lag_drain")) cfg.agent.lag_drain = *v;
  if (auto v = read_size_param(a, "lag_ready")) cfg.agent.lag_ready = *v;
  if (cfg.agent.lag_ready > cfg.agent.lag_drain)
    a.fail(a.has("lag_ready") ? "lag_ready" : "lag_drain",
           "lag_ready must not exceed lag_drain (a drained replica returns under lag_ready)");
  if (auto v = a.str("during_remedy")) {
    if (*v != "maint" && *v != "drain")
      a.fail("during_remedy", "expected maint or drain, got \"" + *v + "\"");
    cfg.agent.maint_during_remedy = *v == "maint";
  }
  if (auto v = a.integer("max_connections", 1, 100000)) cfg.agent.max_connections = *v;
  if (auto v = a.duration("read_wait", std::chrono::milliseconds(1))) cfg.agent.read_wait = *v;
  a.finish();
}

void read_peer_files(YamlMap& root, Config& cfg) {
  auto list = root.map_list("peer_files");
  if (!list) return;
  cfg.peer_files.clear();
  for (auto& m : *list) {
    PeerFileRoot r;
    auto dir = m.str("dir");
    if (!dir || dir->empty() || dir->front() != '/')
      m.fail("dir", "expected an absolute directory path");
    r.dir = *dir;
    while (r.dir.size() > 1 && r.dir.back() == '/') r.dir.pop_back();
    if (r.dir == "/") m.fail("dir", "refusing to serve files from /");
    r.name = m.str("name").value_or(r.dir == cfg.pg_data_dir ? "data_dir" : "");
    if (r.name.empty() ||
        r.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
      m.fail("name", "expected a name of lowercase letters, digits, _ or - (used in peer URLs)");
    for (const auto& other : cfg.peer_files)
      if (other.name == r.name) m.fail("name", "\"" + r.name + "\" is used twice");
    auto pats = m.str_list("patterns");
    if (!pats || pats->empty())
      m.fail("patterns", "expected a list of file name patterns such as \".*.swp\"");
    for (const auto& p : *pats)
      if (p.empty() || p.find('/') != std::string::npos)
        m.fail("patterns", "a pattern matches file names, without '/': \"" + p + "\"");
    r.patterns = *pats;
    m.finish();
    cfg.peer_files.push_back(std::move(r));
  }
}

// Built-in rules first, then the file's: an entry with a built-in name adjusts it
// (its keys replace the built-in ones), `enabled: false` drops it, a new name adds one.
void read_rules(std::optional<YamlMap>& rules, Config& cfg) {
  YAML::Node builtin = load_yaml_string(kDefaultRulesYaml, kDefaultRulesName);
  YamlMap top(builtin, kDefaultRulesName, "");
  if (auto r = top.map("rules")) {
    for (const auto& name : r->keys())
      cfg.rules.push_back({name, r->raw(name), kDefaultRulesName, r->key_path(name), true});
  }
  if (!rules) return;
  for (const auto& name : rules->keys()) {
    YAML::Node node = rules->raw(name);
    const std::string path = rules->key_path(name);
    if (!node.IsMap())
      rules->fail(name, "expected a mapping (when, ladder, ...) or enabled: false");
    auto it = std::find_if(cfg.rules.begin(), cfg.rules.end(),
                           [&](const Config::RuleSource& r) { return r.name == name; });
    if (node["enabled"] && node["enabled"].IsScalar() && node["enabled"].Scalar() == "false") {
      if (it != cfg.rules.end()) cfg.rules.erase(it);
      continue;
    }
    if (it == cfg.rules.end()) {
      cfg.rules.push_back({name, node, cfg.config_file, path, false});
      continue;
    }
    YAML::Node merged = YAML::Clone(it->node);
    for (const auto& kv : node) merged[kv.first.Scalar()] = kv.second;
    it->node = merged;
    it->file = cfg.config_file;
    it->path = path;
  }
}

}  // namespace

std::string_view to_string(Mode m) {
  switch (m) {
    case Mode::observe:
      return "observe";
    case Mode::safe:
      return "safe";
    case Mode::full:
      return "full";
  }
  return "?";
}

std::string_view to_string(WebhookFormat f) {
  switch (f) {
    case WebhookFormat::fener:
      return "json";
    case WebhookFormat::slack:
      return "slack";
    case WebhookFormat::alertmanager:
      return "alertmanager";
  }
  return "?";
}

std::optional<Mode> mode_from_string(std::string_view s) {
  if (s == "observe") return Mode::observe;
  if (s == "safe") return Mode::safe;
  if (s == "full") return Mode::full;
  return std::nullopt;
}

std::string host_of(const std::string& s) {
  if (s.find("://") != std::string::npos) {
    auto p = parse_url(s);
    return p ? p->host : std::string();
  }
  return split_listen(s, 0).first;
}

std::string redact_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "(not a URL)";
  const auto start = scheme_end + 3;
  auto end = url.find_first_of("/?#", start);
  if (end == std::string::npos) end = url.size();
  std::string authority = url.substr(start, end - start);
  if (const auto at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
  return url.substr(0, start) + authority + (end < url.size() ? "/..." : "");
}

namespace {

// A URL as an error message may show it: without user info, path or query, which may
// carry credentials (redact_url); a value with an '@' but no scheme is not shown at all.
std::string shown_url(const std::string& v) {
  if (v.find("://") != std::string::npos) return redact_url(v);
  if (v.find('@') != std::string::npos) return "(not shown: it may hold credentials)";
  return v;
}

// The keys of fener's own file that hold a secret inline: the token, Patroni's password,
// extra webhook headers (Authorization...), and webhook URLs that carry credentials (user
// info, a query, or Slack's secret path).
std::vector<std::string> inline_secret_keys(const YAML::Node& root) {
  std::vector<std::string> out;
  if (!root.IsMap()) return out;
  // A missing key of a const node is an invalid node: every use but a test throws.
  auto get = [](const YAML::Node& n, const char* key) {
    if (!n.IsMap()) return YAML::Node();
    const YAML::Node c = n[key];
    return c ? c : YAML::Node();
  };
  auto has_scalar = [&](const YAML::Node& n, const char* key) {
    const YAML::Node c = get(n, key);
    return c.IsScalar() && !c.Scalar().empty();
  };
  if (has_scalar(get(root, "api"), "token")) out.push_back("api.token");
  if (has_scalar(get(root, "patroni"), "password")) out.push_back("patroni.password");
  const YAML::Node hooks = get(get(root, "alerts"), "webhooks");
  if (hooks.IsSequence()) {
    for (std::size_t i = 0; i < hooks.size(); ++i) {
      const YAML::Node h = hooks[i];
      if (!h.IsMap()) continue;
      const std::string at = "alerts.webhooks[" + std::to_string(i) + "]";
      if (const YAML::Node headers = get(h, "headers"); headers.IsMap() && headers.size() > 0)
        out.push_back(at + ".headers");
      if (has_scalar(h, "url")) {
        const std::string url = get(h, "url").Scalar();
        const bool slack = has_scalar(h, "format") && get(h, "format").Scalar() == "slack";
        if (slack || url.find('?') != std::string::npos || url.find('@') != std::string::npos)
          out.push_back(at + ".url");
      }
    }
  }
  return out;
}

}  // namespace

int port_of(const std::string& s, int fallback) {
  if (s.find("://") != std::string::npos) {
    auto p = parse_url(s);
    return p && p->port ? p->port : fallback;
  }
  return split_listen(s, fallback).second;
}

Config load_config(const LoadOptions& opts) {
  Config cfg;

  // Which fener file: the flag, else the default path when it exists.
  std::optional<YamlMap> root;
  if (opts.config_file) {
    cfg.config_file = *opts.config_file;
  } else if (file_exists(kDefaultConfigFile)) {
    cfg.config_file = kDefaultConfigFile;
  }
  if (!cfg.config_file.empty()) {
    root.emplace(load_yaml_file(cfg.config_file), cfg.config_file, "");
    const auto secrets = inline_secret_keys(root->node());
    struct stat st {};
    if (!secrets.empty() && ::stat(cfg.config_file.c_str(), &st) == 0) {
      std::string keys;
      for (const auto& k : secrets) keys += (keys.empty() ? "" : ", ") + k;
      if (auto problem = world_readable_problem(cfg.config_file, st, "secrets (" + keys + ")"))
        throw ConfigError(cfg.config_file, 0, 0, "", *problem);
    }
  }

  std::optional<YamlMap> node, cluster, patroni, etcd, pg, defaults, checks, log, api, audit, lock,
      rules, agent, haproxy, fleet, alerts;
  std::optional<std::string> mode;
  cfg.state_dir = kDefaultStateDir;
  if (root) {
    mode = root->str("mode");
    if (auto v = root->str("state_dir")) {
      if (v->empty() || (*v)[0] != '/')
        root->fail("state_dir", "expected an absolute directory path, e.g. /var/lib/fener");
      cfg.state_dir = *v;
      while (cfg.state_dir.size() > 1 && cfg.state_dir.back() == '/') cfg.state_dir.pop_back();
    }
    api = root->map("api");
    agent = root->map("agent");
    audit = root->map("audit");
    lock = root->map("lock");
    fleet = root->map("fleet");
    alerts = root->map("alerts");
    rules = root->map("rules");
    root->raw("peer_files");  // read below, once the data dir is known
    if (auto services = root->map("services")) {
      for (const auto& name : services->keys()) {
        auto entry = services->map(name);
        if (!entry) services->fail(name, "expected a mapping with command: [argv...]");
        auto argv = entry->str_list("command", false);
        if (!argv || argv->empty() || argv->front().empty() || argv->front()[0] != '/')
          entry->fail("command", "expected a command as a list, starting with an absolute path");
        entry->finish();
        cfg.service_commands[name] = *argv;
      }
    }
    node = root->map("node");
    cluster = root->map("cluster");
    patroni = root->map("patroni");
    etcd = root->map("etcd");
    pg = root->map("postgresql");
    haproxy = root->map("haproxy");
    defaults = root->map("defaults");
    checks = root->map("checks");
    log = root->map("log");
    root->finish();
  }

  // Discovery: the flag, else the fener file's patroni.config, else the default path.
  std::string patroni_file;
  bool patroni_explicit = true;
  if (opts.patroni_config) {
    patroni_file = *opts.patroni_config;
  } else if (patroni && patroni->has("config")) {
    patroni_file = *patroni->str("config");
  } else if (file_exists(kDefaultPatroniConfig)) {
    patroni_file = kDefaultPatroniConfig;
    patroni_explicit = false;
  }
  if (!patroni_file.empty()) {
    if (patroni_explicit && !file_exists(patroni_file))
      throw ConfigError(patroni_file, 0, 0, "", "Patroni configuration file not found");
    discover_patroni(patroni_file, cfg);
  }

  // etcd environment files: listed ones must exist; the defaults are used when present.
  if (etcd && etcd->has("env_files")) {
    cfg.etcd_env_files = *etcd->str_list("env_files");
    cfg.etcd_env_files_explicit = true;
    for (const auto& f : cfg.etcd_env_files) {
      if (!file_exists(f)) etcd->fail("env_files", "file " + f + " does not exist");
    }
  } else {
    for (const auto& f : kDefaultEtcdEnvFiles)
      if (file_exists(f)) cfg.etcd_env_files.push_back(f);
  }
  if (!cfg.etcd_env_files.empty()) discover_etcd_env(cfg.etcd_env_files.front(), cfg);

  // HAProxy: haproxy.config, else the default path when it exists; enabled: false skips it.
  if (haproxy) {
    const bool enabled = haproxy->boolean("enabled").value_or(true);
    if (auto v = haproxy->str("config"); v && enabled) {
      if (v->empty() || (*v)[0] != '/') haproxy->fail("config", "expected an absolute path");
      if (!file_exists(*v)) haproxy->fail("config", "file " + *v + " does not exist");
      discover_haproxy(*v, cfg);
      cfg.haproxy.explicit_config = true;
    } else if (enabled && file_exists(kDefaultHaproxyConfig)) {
      discover_haproxy(kDefaultHaproxyConfig, cfg);
    }
    if (auto v = haproxy->str("socket"); v && enabled) {
      const std::string sock = normalize_stats_socket(*v);
      if (!valid_stats_socket(sock))
        haproxy->fail("socket",
                      "expected a unix socket path such as /run/haproxy/admin.sock or "
                      "IP:PORT, got \"" +
                          *v + "\"");
      cfg.haproxy.socket = sock;
      cfg.haproxy.explicit_config = true;
    }
    haproxy->finish();
  } else if (file_exists(kDefaultHaproxyConfig)) {
    discover_haproxy(kDefaultHaproxyConfig, cfg);
  }

  // Explicit settings win over discovery.
  if (node) {
    if (auto v = node->str("name")) cfg.node_name = *v;
    if (auto v = node->str("address")) cfg.node_address = *v;
    node->finish();
  }
  if (cluster) {
    if (auto v = cluster->str("scope")) cfg.scope = *v;
    if (auto v = cluster->integer("members", 0, 100)) cfg.expected_members = static_cast<int>(*v);
    cluster->finish();
  }
  if (patroni) {
    patroni->str("config");  // read above
    if (auto v = patroni->str("url")) {
      if (v->rfind("http://", 0) != 0 && v->rfind("https://", 0) != 0)
        patroni->fail("url", "expected an http:// or https:// URL, got \"" + shown_url(*v) + "\"");
      cfg.patroni_url = *v;
    }
    if (auto v = patroni->str("username")) cfg.patroni_username = *v;
    if (auto v = patroni->str("password")) cfg.patroni_password = *v;
    if (auto v = patroni->boolean("enabled"); v && !*v) cfg.patroni_url.clear();
    read_tls_keys(*patroni, cfg.patroni_tls);
    patroni->finish();
  }
  if (etcd) {
    if (auto v = etcd->str_list("endpoints", true)) {
      for (const auto& u : *v) {
        if (!parse_url(u))
          etcd->fail("endpoints",
                     "expected URLs such as http://10.0.0.1:2379, got \"" + shown_url(u) + "\"");
      }
      cfg.etcd_endpoints = *v;
    }
    if (auto members = etcd->map_list("members")) {
      cfg.etcd_members.clear();
      for (auto& m : *members) {
        EtcdMember em;
        auto name = m.str("name");
        if (!name || name->empty()) m.fail_here("each member needs a name");
        em.name = *name;
        em.peer_urls = m.str_list("peer_urls", true).value_or(std::vector<std::string>{});
        em.client_urls = m.str_list("client_urls", true).value_or(std::vector<std::string>{});
        m.finish();
        cfg.etcd_members.push_back(std::move(em));
      }
    }
    etcd->str_list("env_files");  // read above
    read_tls_keys(*etcd, cfg.etcd_tls);
    etcd->finish();
  }
  add_tls_file_set(cfg, cfg.etcd_tls, "etcd client certificate");
  add_tls_file_set(cfg, cfg.patroni_tls, "Patroni REST API client certificate");
  if (pg) {
    if (auto v = pg->str("data_dir")) cfg.pg_data_dir = *v;
    if (auto v = pg->str("listen")) cfg.pg_listen = *v;
    if (auto v = pg->str("bin_dir")) cfg.pg_bin_dir = *v;
    if (auto v = pg->str("owner")) cfg.pg_owner = *v;
    pg->finish();
  }
  if (defaults) {
    read_check_timing(*defaults, cfg.defaults);
    defaults->finish();
  }
  if (log) {
    if (auto v = log->str("level")) {
      static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
      if (!levels.count(*v))
        log->fail("level", "expected one of trace, debug, info, warn, error, got \"" + *v + "\"");
      cfg.log_level = *v;
    }
    log->finish();
  }
  if (mode) {
    auto m = mode_from_string(*mode);
    if (!m) root->fail("mode", "expected observe, safe or full, got \"" + *mode + "\"");
    cfg.mode = *m;
  }
  if (opts.mode) cfg.mode = *opts.mode;
  if (!cfg.node_address.empty())
    cfg.api.listen = cfg.node_address + ":" + std::to_string(kDefaultApiPort);
  if (file_exists(kDefaultTokenFile)) {
    YamlMap dummy(YAML::Node(), kDefaultTokenFile, "api");
    cfg.api.token = read_token_file(dummy, kDefaultTokenFile);
    cfg.api.token_source = kDefaultTokenFile;
  }
  if (api) read_api(*api, cfg);
  // The agent answers for a database node: it needs Patroni there.
  if (!cfg.node_address.empty() && !cfg.patroni_url.empty())
    cfg.agent.listen = cfg.node_address + ":" + std::to_string(kDefaultAgentPort);
  if (agent) read_agent(*agent, cfg);
  if (!cfg.pg_data_dir.empty()) cfg.peer_files.push_back({"data_dir", cfg.pg_data_dir, {".*.swp"}});
  if (root) read_peer_files(*root, cfg);
  cfg.audit_file = cfg.state_dir + "/audit.jsonl";
  if (audit) {
    if (auto v = audit->str("file")) cfg.audit_file = *v;
    audit->finish();
  }
  if (lock) {
    if (auto v = lock->duration("ttl", std::chrono::seconds(5))) cfg.lock_ttl = *v;
    lock->finish();
  }
  if (fleet) {
    if (auto v = fleet->boolean("enabled")) cfg.fleet.enabled = *v;
    if (auto v = fleet->duration("interval", std::chrono::seconds(1))) cfg.fleet.interval = *v;
    fleet->finish();
  }
  read_rules(rules, cfg);
  if (alerts) read_alerts(*alerts, cfg.alerts);
  if (cfg.node_name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) cfg.node_name = host;
  }

  // Checks: the defaults for this node, then the file's entries over them.
  for (const auto& name : default_checks(cfg)) {
    CheckSpec s;
    s.name = s.type = name;
    s.timing = cfg.defaults;
    s.path = "checks." + name;
    cfg.checks.push_back(std::move(s));
  }
  if (checks) {
    for (const auto& name : checks->keys()) {
      YamlMap entry = checks->map(name).value_or(
          YamlMap(YAML::Node(), cfg.config_file, checks->key_path(name)));
      auto it = std::find_if(cfg.checks.begin(), cfg.checks.end(),
                             [&](const CheckSpec& c) { return c.name == name; });
      if (it == cfg.checks.end()) {
        CheckSpec s;
        s.name = s.type = name;
        cfg.checks.push_back(std::move(s));
        it = std::prev(cfg.checks.end());
      }
      if (auto t = entry.str("type")) it->type = *t;
      it->timing = cfg.defaults;
      read_check_timing(entry, it->timing);
      it->params = entry.node();
      it->file = cfg.config_file;
      it->path = entry.path();
      if (auto en = entry.boolean("enabled"); en && !*en) cfg.checks.erase(it);
    }
  }
  return cfg;
}

}  // namespace fener
