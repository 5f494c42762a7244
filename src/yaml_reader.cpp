#include "src/yaml_reader.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace fener {

namespace {

std::string describe_node(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "\"" + n.Scalar() + "\"";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "an undefined value";
  }
}

}  // namespace

std::optional<Duration> parse_duration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::size_t pos = 0;
  while (pos < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.'))
    ++pos;
  if (pos == 0 || pos == text.size()) return std::nullopt;
  const std::string num = text.substr(0, pos), unit = text.substr(pos);
  if (std::count(num.begin(), num.end(), '.') > 1 || num.front() == '.' || num.back() == '.')
    return std::nullopt;
  double value = std::stod(num);
  double ms;
  if (unit == "ms") {
    ms = value;
  } else if (unit == "s") {
    ms = value * 1000;
  } else if (unit == "m") {
    ms = value * 60'000;
  } else if (unit == "h") {
    ms = value * 3'600'000;
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(ms) || ms > 1e12) return std::nullopt;
  return Duration{static_cast<Duration::rep>(std::llround(ms))};
}

std::string format_duration(Duration d) {
  const auto ms = d.count();
  if (ms % 3'600'000 == 0 && ms > 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0 && ms > 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0 && ms > 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

YAML::Node load_yaml_string(const std::string& text, const std::string& name) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(name, e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg);
  }
}

YAML::Node load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path, 0, 0, "", "cannot read file: " + std::string(strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return load_yaml_string(ss.str(), path);
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

YamlMap::YamlMap(YAML::Node node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap())
    fail_here("expected a mapping of keys, got " + describe_node(node_));
}

std::string YamlMap::key_path(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

void YamlMap::fail(const std::string& key, const std::string& problem) const {
  YAML::Mark mark = YAML::Mark::null_mark();
  if (node_.IsMap()) {
    // Point at the value when there is one, else at the mapping.
    for (const auto& kv : node_) {
      if (kv.first.Scalar() == key) {
        mark = kv.second.IsNull() ? kv.first.Mark() : kv.second.Mark();
        break;
      }
    }
    if (mark.is_null()) mark = node_.Mark();
  }
  const bool known = !mark.is_null() && mark.line >= 0;
  throw ConfigError(file_, known ? mark.line + 1 : 0, known ? mark.column + 1 : 0, key_path(key),
                    problem);
}

void YamlMap::fail_here(const std::string& problem) const {
  const auto mark = node_.Mark();
  const bool known = !mark.is_null() && mark.line >= 0;
  throw ConfigError(file_, known ? mark.line + 1 : 0, known ? mark.column + 1 : 0, path_, problem);
}

bool YamlMap::has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node YamlMap::value(const std::string& key) {
  read_.insert(key);
  if (!node_.IsMap()) return YAML::Node();
  YAML::Node v = node_[key];
  return v;
}

std::vector<std::string> YamlMap::keys() const {
  std::vector<std::string> out;
  if (!node_.IsMap()) return out;
  for (const auto& kv : node_) out.push_back(kv.first.Scalar());
  return out;
}

YAML::Node YamlMap::raw(const std::string& key) {
  return value(key);
}

std::optional<std::string> YamlMap::str(const std::string& key) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected a string, got " + describe_node(v));
  return v.Scalar();
}

std::optional<bool> YamlMap::boolean(const std::string& key) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  if (v.IsScalar()) {
    const auto& s = v.Scalar();
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
  }
  fail(key, "expected true or false, got " + describe_node(v));
}

std::optional<std::int64_t> YamlMap::integer(const std::string& key, std::int64_t min,
                                             std::int64_t max) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  const std::string range = " from " + std::to_string(min) + " to " + std::to_string(max);
  if (!v.IsScalar()) fail(key, "expected a whole number" + range + ", got " + describe_node(v));
  const auto& s = v.Scalar();
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(s, &used, 10);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size())
    fail(key, "expected a whole number" + range + ", got " + describe_node(v));
  if (n < min || n > max) fail(key, "expected a whole number" + range + ", got " + s);
  return n;
}

std::optional<double> YamlMap::number(const std::string& key, double min, double max) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  std::ostringstream range;
  range << " from " << min << " to " << max;
  if (!v.IsScalar()) fail(key, "expected a number" + range.str() + ", got " + describe_node(v));
  const auto& s = v.Scalar();
  std::size_t used = 0;
  double d = 0;
  try {
    d = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size() || !std::isfinite(d))
    fail(key, "expected a number" + range.str() + ", got " + describe_node(v));
  if (d < min || d > max) fail(key, "expected a number" + range.str() + ", got " + s);
  return d;
}

std::optional<Duration> YamlMap::duration(const std::string& key, Duration min) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  const std::string expected = "expected a duration such as 500ms, 5s or 2m";
  if (!v.IsScalar()) fail(key, expected + ", got " + describe_node(v));
  auto d = parse_duration(v.Scalar());
  if (!d) fail(key, expected + " (a number and a unit), got " + describe_node(v));
  if (*d < min) fail(key, "must be at least " + format_duration(min) + ", got " + v.Scalar());
  return d;
}

std::optional<std::vector<std::string>> YamlMap::str_list(const std::string& key,
                                                          bool allow_comma_string) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  std::vector<std::string> out;
  if (v.IsScalar() && allow_comma_string) {
    std::stringstream ss(v.Scalar());
    std::string item;
    while (std::getline(ss, item, ',')) {
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (!item.empty()) out.push_back(item);
    }
    return out;
  }
  if (!v.IsSequence()) fail(key, "expected a list of strings, got " + describe_node(v));
  for (const auto& item : v) {
    if (!item.IsScalar()) fail(key, "expected a list of strings, found " + describe_node(item));
    out.push_back(item.Scalar());
  }
  return out;
}

std::optional<YamlMap> YamlMap::map(const std::string& key) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  if (!v.IsMap()) fail(key, "expected a mapping of keys, got " + describe_node(v));
  return YamlMap(v, file_, key_path(key));
}

std::optional<std::vector<YamlMap>> YamlMap::map_list(const std::string& key) {
  auto v = value(key);
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  if (!v.IsSequence()) fail(key, "expected a list of mappings, got " + describe_node(v));
  std::vector<YamlMap> out;
  std::size_t i = 0;
  for (const auto& item : v) {
    const std::string p = key_path(key) + "[" + std::to_string(i++) + "]";
    if (!item.IsMap()) {
      const auto m = item.Mark();
      throw ConfigError(file_, m.line + 1, m.column + 1, p,
                        "expected a mapping, got " + describe_node(item));
    }
    out.emplace_back(item, file_, p);
  }
  return out;
}

void YamlMap::finish() const {
  if (!node_.IsMap()) return;
  for (const auto& kv : node_) {
    const std::string k = kv.first.Scalar();
    if (read_.count(k)) continue;
    std::string best;
    std::size_t best_d = 3;  // suggest only close names
    for (const auto& known : read_) {
      const auto d = edit_distance(k, known);
      if (d < best_d) best_d = d, best = known;
    }
    std::string problem = "unknown key";
    if (!best.empty()) problem += " (did you mean \"" + best + "\"?)";
    std::vector<std::string> known(read_.begin(), read_.end());
    if (!known.empty()) {
      problem += "; expected one of: ";
      for (std::size_t i = 0; i < known.size(); ++i) problem += (i ? ", " : "") + known[i];
    }
    const auto m = kv.first.Mark();
    throw ConfigError(file_, m.line + 1, m.column + 1, key_path(k), problem);
  }
}

}  // namespace fener
