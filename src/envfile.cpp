#include "src/envfile.hpp"

#include <algorithm>
#include <cctype>
#include <map>

namespace fener {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_newline(char c) {
  return c == '\n' || c == '\r';
}
bool is_name_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool valid_name(std::string_view key) {
  if (key.empty() || !is_name_start(key.front())) return false;
  return std::all_of(key.begin(), key.end(), is_name_char);
}

// systemd drops values with control characters other than tab and newline.
bool valid_value(std::string_view v) {
  return std::none_of(v.begin(), v.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\n' && c != '\t') || u == 0x7f;
  });
}

// Quotes value for an environment file line.
std::string double_quoted(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\' || c == '`' || c == '$') out += '\\';
    out += c;
  }
  return out + "\"";
}

// "key: value" -> the value as YAML would read a plain or quoted scalar, roughly.
std::string yaml_scalar_after_colon(std::string_view line) {
  auto colon = line.find(':');
  std::string_view v = trim(line.substr(colon + 1));
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    return std::string(v.substr(1, v.size() - 2));
  }
  if (auto hash = v.find(" #"); hash != std::string_view::npos) v = trim(v.substr(0, hash));
  return std::string(v);
}

std::string yaml_reason(std::string_view line) {
  std::string_view t = trim(line);
  std::string_view name = trim(t.substr(0, t.find(':')));
  return "YAML syntax has no effect in an environment file; write " + etcd_env_name_for_flag(name) +
         "=" + double_quoted(yaml_scalar_after_colon(t));
}

// Why an assignment with key `key` (trailing whitespace already stripped) is ignored.
std::string invalid_key_reason(std::string_view key, std::string_view raw, std::string_view value) {
  std::string_view first_line = raw.substr(0, raw.find('\n'));
  if (key.starts_with("export") && key.size() > 6 && is_space(key[6]) &&
      valid_name(trim(key.substr(6)))) {
    return "'export' is shell syntax, not environment-file syntax: systemd ignores this line; "
           "write " +
           std::string(trim(key.substr(6))) + "=" + double_quoted(value);
  }
  if (key.starts_with("--") && key.size() > 2) {
    return "command-line flag syntax has no effect in an environment file; write " +
           etcd_env_name_for_flag(key.substr(2)) + "=" + double_quoted(value);
  }
  if (looks_like_yaml(first_line)) return yaml_reason(first_line);
  return "invalid variable name '" + std::string(key) +
         "' (letters, digits and '_', not starting with a digit): systemd ignores this line";
}

std::string no_assignment_reason(std::string_view raw) {
  std::string_view t = trim(raw);
  if (looks_like_yaml(t)) return yaml_reason(t);
  if (t.starts_with("--") && t.size() > 2) {
    return "command-line flag syntax has no effect in an environment file; write " +
           etcd_env_name_for_flag(t.substr(2)) + "=\"true\"";
  }
  if (t.front() == '=') return "no variable name before '=': systemd ignores this line";
  return "not an assignment (no '='): systemd ignores this line";
}

}  // namespace

const EnvEntry* EnvFile::find(std::string_view key) const {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->key == key) return &*it;
  }
  return nullptr;
}

bool looks_like_yaml(std::string_view line) {
  std::string_view t = trim(line);
  if (t.empty() || !is_name_start(t.front())) return false;
  std::size_t i = 1;
  while (i < t.size() && (is_name_char(t[i]) || t[i] == '-' || t[i] == '.')) ++i;
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t')) ++i;
  if (i >= t.size() || t[i] != ':') return false;
  // "key:" alone or "key: value"; "http://..." is not a mapping.
  return i + 1 == t.size() || t[i + 1] == ' ' || t[i + 1] == '\t';
}

std::string etcd_env_name_for_flag(std::string_view flag) {
  std::string name;
  for (char c : trim(flag)) {
    name += (c == '-' || c == '.') ? '_'
                                   : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (!name.starts_with("ETCD_") && !name.starts_with("ETCDCTL_")) name = "ETCD_" + name;
  return name;
}

EnvFile parse_env_file(std::string_view text) {
  // The states of systemd's parse_env_file_internal(), so quirks match.
  enum class St {
    pre_key,
    key,
    pre_value,
    value,
    value_escape,
    single_quote,
    double_quote,
    double_quote_escape,
    comment,
    comment_escape
  };
  EnvFile out;
  St st = St::pre_key;
  std::string key, value;
  std::size_t key_ws = std::string::npos, value_ws = std::string::npos;
  int line = 1, start_line = 0, quote_line = 0;
  std::size_t line_start = 0, start_pos = 0;
  bool quoted_newline = false;
  std::map<std::string, int, std::less<>> seen;

  auto raw_until = [&](std::size_t end) {
    std::string r(text.substr(start_pos, end - start_pos));
    while (!r.empty() && is_newline(r.back())) r.pop_back();
    return r;
  };
  auto drop_key = [&](std::size_t end) {
    std::string raw = raw_until(end);
    out.ignored.push_back({start_line, raw, no_assignment_reason(raw)});
    key.clear();
  };
  auto push = [&](std::size_t end) {
    if (key_ws != std::string::npos) key.resize(key_ws);
    std::string raw = raw_until(end);
    if (!valid_name(key)) {
      out.ignored.push_back({start_line, raw, invalid_key_reason(key, raw, value)});
    } else if (!valid_value(value)) {
      out.ignored.push_back(
          {start_line, raw, "control character in the value: systemd ignores this assignment"});
    } else {
      if (auto it = seen.find(key); it != seen.end()) {
        out.warnings.push_back({start_line, raw,
                                key + " is set again (first on line " + std::to_string(it->second) +
                                    "): the last one wins"});
      } else {
        seen.emplace(key, start_line);
      }
      if (quoted_newline) {
        out.warnings.push_back({start_line, raw,
                                "quoted value of " + key + " spans lines " +
                                    std::to_string(quote_line) + "-" + std::to_string(line) +
                                    ": check for a missing closing quote"});
      }
      out.entries.push_back({key, value, start_line});
    }
    key.clear();
    value.clear();
    quoted_newline = false;
  };

  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    switch (st) {
      case St::pre_key:
        if (c == '#' || c == ';') {
          st = St::comment;
        } else if (!is_space(c)) {
          st = St::key;
          key_ws = std::string::npos;
          key = c;
          start_line = line;
          start_pos = line_start;
        }
        break;
      case St::key:
        if (is_newline(c)) {
          st = St::pre_key;
          drop_key(i);
        } else if (c == '=') {
          st = St::pre_value;
          value_ws = std::string::npos;
        } else {
          if (!is_space(c)) {
            key_ws = std::string::npos;
          } else if (key_ws == std::string::npos) {
            key_ws = key.size();
          }
          key += c;
        }
        break;
      case St::pre_value:
        if (is_newline(c)) {
          st = St::pre_key;
          push(i);
        } else if (c == '\'') {
          st = St::single_quote;
          quote_line = line;
        } else if (c == '"') {
          st = St::double_quote;
          quote_line = line;
        } else if (c == '\\') {
          st = St::value_escape;
        } else if (!is_space(c)) {
          st = St::value;
          value += c;
        }
        break;
      case St::value:
        if (is_newline(c)) {
          st = St::pre_key;
          if (value_ws != std::string::npos) value.resize(value_ws);
          push(i);
        } else if (c == '\\') {
          st = St::value_escape;
          value_ws = std::string::npos;
        } else {
          if (!is_space(c)) {
            value_ws = std::string::npos;
          } else if (value_ws == std::string::npos) {
            value_ws = value.size();
          }
          value += c;
        }
        break;
      case St::value_escape:
        st = St::value;
        if (!is_newline(c)) value += c;  // an escaped newline continues the value
        break;
      case St::single_quote:
        if (c == '\'') {
          st = St::pre_value;
        } else {
          if (c == '\n') quoted_newline = true;
          value += c;
        }
        break;
      case St::double_quote:
        if (c == '"') {
          st = St::pre_value;
        } else if (c == '\\') {
          st = St::double_quote_escape;
        } else {
          if (c == '\n') quoted_newline = true;
          value += c;
        }
        break;
      case St::double_quote_escape:
        st = St::double_quote;
        if (c == '"' || c == '\\' || c == '`' || c == '$') {
          value += c;
        } else if (c != '\n') {
          value += '\\';  // like the shell, other escapes keep their backslash
          value += c;
        }
        break;
      case St::comment:
        if (c == '\\') {
          st = St::comment_escape;
        } else if (is_newline(c)) {
          st = St::pre_key;
        }
        break;
      case St::comment_escape:
        if (is_newline(c)) {
          st = St::pre_key;
          std::size_t next = i + 1;
          if (c == '\r' && next < text.size() && text[next] == '\n') ++next;
          if (next < text.size()) {
            std::size_t end = text.find_first_of("\r\n", line_start);
            out.warnings.push_back({line, std::string(text.substr(line_start, end - line_start)),
                                    "comment ends with '\\': systemd before v254 treats line " +
                                        std::to_string(line + 1) + " as part of the comment"});
          }
        } else {
          st = St::comment;
        }
        break;
    }
    if (c == '\n') {
      ++line;
      line_start = i + 1;
    }
  }

  // End of text without a final newline.
  switch (st) {
    case St::key:
      drop_key(text.size());
      break;
    case St::value:
      if (value_ws != std::string::npos) value.resize(value_ws);
      push(text.size());
      break;
    case St::single_quote:
    case St::double_quote:
    case St::double_quote_escape: {
      const char* which = st == St::single_quote ? "single" : "double";
      std::string k = key_ws != std::string::npos ? key.substr(0, key_ws) : key;
      int l = start_line;
      std::string raw = raw_until(text.size());
      quoted_newline = false;  // the warning below says more
      push(text.size());
      out.warnings.push_back({l, raw,
                              std::string("unterminated ") + which + " quote in the value of " + k +
                                  ": it runs to the end of the file"});
      break;
    }
    case St::pre_value:
    case St::value_escape:
      push(text.size());
      break;
    default:
      break;
  }
  return out;
}

std::vector<std::string> InitialCluster::names() const {
  std::vector<std::string> out;
  for (const auto& m : members) {
    if (std::find(out.begin(), out.end(), m.name) == out.end()) out.push_back(m.name);
  }
  return out;
}

std::vector<std::string> InitialCluster::urls_of(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& m : members) {
    if (m.name == name) out.push_back(m.url);
  }
  return out;
}

std::optional<UrlParts> parse_url(std::string_view url) {
  url = trim(url);
  auto sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::nullopt;
  UrlParts u;
  for (char c : url.substr(0, sep)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      return std::nullopt;
    }
    u.scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  std::string_view rest = url.substr(sep + 3);
  auto end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  if (end != std::string_view::npos) u.path = std::string(rest.substr(end));
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    authority = authority.substr(at + 1);
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
      if (port.empty()) return std::nullopt;
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    if (authority.find(':') != colon) return std::nullopt;  // bare IPv6 needs brackets
    u.host = std::string(authority.substr(0, colon));
    port = authority.substr(colon + 1);
    if (port.empty()) return std::nullopt;
  } else {
    u.host = std::string(authority);
  }
  if (u.host.empty()) return std::nullopt;
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        })) {
      return std::nullopt;
    }
    u.port = std::stoi(std::string(port));
    if (u.port < 1 || u.port > 65535) return std::nullopt;
  }
  return u;
}

InitialCluster parse_initial_cluster(std::string_view value) {
  InitialCluster out;
  for (const std::string& item : split_url_list(value)) {
    auto eq = item.find('=');
    if (eq == std::string::npos) {
      out.errors.push_back("'" + item + "' has no '=' (expected name=url)");
      continue;
    }
    std::string name(trim(std::string_view(item).substr(0, eq)));
    std::string url(trim(std::string_view(item).substr(eq + 1)));
    if (name.empty()) {
      out.errors.push_back("'" + item + "' has no member name before '='");
      continue;
    }
    auto u = parse_url(url);
    if (!u || (u->scheme != "http" && u->scheme != "https" && u->scheme != "unix" &&
               u->scheme != "unixs")) {
      out.errors.push_back("'" + item + "': '" + url + "' is not a URL like http://host:2380");
      continue;
    }
    if ((u->scheme == "http" || u->scheme == "https") && u->port == 0) {
      out.errors.push_back("'" + item + "': '" + url + "' has no port (etcd needs host:port)");
      continue;
    }
    if (!u->path.empty()) {
      out.errors.push_back("'" + item + "': '" + url + "' has a path (etcd rejects it)");
      continue;
    }
    out.members.push_back({std::move(name), std::move(url)});
  }
  return out;
}

std::vector<std::string> split_url_list(std::string_view value) {
  std::vector<std::string> out;
  while (true) {
    auto comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace fener
