#include "src/haproxy_cfg.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

namespace fener {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// What an agent-send string asks the agent about.
BackendRole role_of_agent_word(const std::string& sent) {
  std::string w = lower(trim(sent));
  // Single quotes keep "\n" as two characters; the question is the same.
  while (w.size() >= 2 && w[w.size() - 2] == '\\' && (w.back() == 'n' || w.back() == 'r'))
    w.resize(w.size() - 2);
  if (w == "primary" || w == "master" || w == "leader" || w == "read-write") {
    return BackendRole::primary;
  }
  if (w == "replica" || w == "read-only" || w == "standby") return BackendRole::replica;
  return BackendRole::unknown;
}

char unescape(char c) {
  switch (c) {
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    default:
      return c;
  }
}

// The role told by a health-check line of a section, and how it was told.
std::pair<BackendRole, std::string> role_of_line(const std::vector<std::string>& w) {
  if (w.size() >= 2 && w[0] == "option" && w[1] == "httpchk") {
    for (std::size_t i = 2; i < w.size(); ++i) {
      if (!w[i].empty() && w[i][0] == '/') {
        const BackendRole r = role_of_patroni_path(w[i]);
        if (r != BackendRole::unknown) {
          std::string how = "option httpchk";
          for (std::size_t j = 2; j <= i; ++j) how += " " + w[j];
          return {r, how};
        }
      }
    }
  }
  if (w.size() >= 2 && w[0] == "http-check" && w[1] == "send") {
    for (std::size_t i = 2; i + 1 < w.size(); ++i) {
      if (w[i] == "uri") {
        const BackendRole r = role_of_patroni_path(w[i + 1]);
        if (r != BackendRole::unknown) return {r, "http-check send uri " + w[i + 1]};
      }
    }
  }
  if (!w.empty() && (w[0] == "server" || w[0] == "default-server")) {
    for (std::size_t i = 1; i + 1 < w.size(); ++i) {
      if (w[i] == "agent-send") {
        const BackendRole r = role_of_agent_word(w[i + 1]);
        if (r != BackendRole::unknown) {
          return {r, "agent-send \"" + trim(w[i + 1]) + "\""};
        }
      }
    }
  }
  return {BackendRole::unknown, ""};
}

}  // namespace

std::string_view to_string(BackendRole r) {
  switch (r) {
    case BackendRole::primary:
      return "primary";
    case BackendRole::replica:
      return "replica";
    case BackendRole::unknown:
      return "unknown";
  }
  return "unknown";
}

std::vector<std::string> HaproxyCfg::backends_with(BackendRole r) const {
  std::vector<std::string> out;
  for (const auto& s : sections)
    if (s.role == r) out.push_back(s.name);
  return out;
}

std::vector<std::string> haproxy_cfg_words(std::string_view line) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < line.size()) {
        cur += unescape(line[++i]);
      } else {
        cur += c;
      }
      continue;
    }
    if (c == '#') break;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (in_word) out.push_back(std::move(cur));
      cur.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '\\' && i + 1 < line.size()) {
      cur += line[++i];
    } else {
      cur += c;
    }
  }
  if (in_word) out.push_back(std::move(cur));
  return out;
}

BackendRole role_of_patroni_path(std::string_view path) {
  std::string p(path.substr(0, path.find('?')));
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  p = lower(p);
  if (p == "/primary" || p == "/master" || p == "/leader" || p == "/read-write") {
    return BackendRole::primary;
  }
  if (p == "/replica" || p == "/read-only" || p == "/standby-leader") {
    // /standby-leader is the leader of a standby cluster: read-only too.
    return BackendRole::replica;
  }
  return BackendRole::unknown;
}

HaproxyCfg parse_haproxy_cfg(std::string_view text) {
  HaproxyCfg cfg;
  std::string section;  // keyword of the current section
  BackendRole defaults_role = BackendRole::unknown;
  std::string defaults_reason;
  HaproxyCfgSection* cur = nullptr;
  bool cur_has_own_role = false;

  auto close_section = [&] {
    if (cur && !cur_has_own_role && cur->role == BackendRole::unknown &&
        defaults_role != BackendRole::unknown) {
      cur->role = defaults_role;
      cur->role_reason = defaults_reason + " (from defaults)";
    }
    cur = nullptr;
    cur_has_own_role = false;
  };

  std::istringstream in{std::string(text)};
  std::string raw;
  int lineno = 0;
  while (std::getline(in, raw)) {
    ++lineno;
    const auto w = haproxy_cfg_words(raw);
    if (w.empty()) continue;
    static const char* const kSections[] = {
        "global",   "defaults", "frontend",    "backend", "listen", "peers",   "resolvers",
        "userlist", "program",  "http-errors", "ring",    "cache",  "mailers", "fcgi-app"};
    if (std::find(std::begin(kSections), std::end(kSections), w[0]) != std::end(kSections)) {
      close_section();
      section = w[0];
      if ((section == "listen" || section == "backend") && w.size() >= 2) {
        HaproxyCfgSection s;
        s.kind = section;
        s.name = w[1];
        s.line = lineno;
        cfg.sections.push_back(std::move(s));
        cur = &cfg.sections.back();
      } else if (section == "defaults") {
        // A new defaults section resets what the previous one set.
        defaults_role = BackendRole::unknown;
        defaults_reason.clear();
      }
      continue;
    }
    if (section == "global") {
      if (w.size() >= 3 && w[0] == "stats" && w[1] == "socket" && cfg.stats_socket.empty()) {
        cfg.stats_socket = w[2];
      }
      continue;
    }
    auto [role, reason] = role_of_line(w);
    if (section == "defaults") {
      if (role != BackendRole::unknown) {
        defaults_role = role;
        defaults_reason = reason;
      }
      continue;
    }
    if (!cur) continue;
    if (role != BackendRole::unknown && !cur_has_own_role) {
      cur->role = role;
      cur->role_reason = reason;
      cur_has_own_role = true;
    }
    if (w[0] == "server" && w.size() >= 3) {
      cur->servers.push_back({w[1], w[2], lineno});
    }
  }
  close_section();
  return cfg;
}

std::string normalize_stats_socket(const std::string& s) {
  for (const char* prefix : {"unix@", "ipv4@", "ipv6@"}) {
    const std::string p = prefix;
    if (s.rfind(p, 0) == 0) return s.substr(p.size());
  }
  return s;
}

bool stats_socket_is_tcp(const std::string& s) {
  if (s.empty() || s[0] == '/' || s[0] == '.') return false;
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 >= s.size()) return false;
  return std::all_of(s.begin() + static_cast<std::ptrdiff_t>(colon) + 1, s.end(),
                     [](unsigned char c) { return std::isdigit(c) != 0; });
}

}  // namespace fener
