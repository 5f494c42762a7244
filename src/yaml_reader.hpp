// Strict reading of YAML mappings: typed getters that fail with file:line:column, the
// dotted key and what was expected, and a finish() that rejects keys nobody asked for.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "src/config_error.hpp"

namespace fener {

using Duration = std::chrono::milliseconds;

// Parses "250ms", "5s", "1.5s", "2m", "1h". Returns nullopt on anything else.
std::optional<Duration> parse_duration(const std::string& text);
std::string format_duration(Duration d);

// Loads a YAML file; syntax errors become ConfigError with the parser's position.
YAML::Node load_yaml_file(const std::string& path);
YAML::Node load_yaml_string(const std::string& text, const std::string& name);

class YamlMap {
 public:
  // node must be a mapping (or null/absent, read as empty); path is the dotted prefix.
  YamlMap(YAML::Node node, std::string file, std::string path);

  bool has(const std::string& key) const;
  std::optional<std::string> str(const std::string& key);
  std::optional<bool> boolean(const std::string& key);
  std::optional<std::int64_t> integer(const std::string& key, std::int64_t min, std::int64_t max);
  std::optional<double> number(const std::string& key, double min, double max);
  std::optional<Duration> duration(const std::string& key, Duration min = Duration{1});
  // A list of strings; when allow_comma_string, "a,b" is read as ["a", "b"] too.
  std::optional<std::vector<std::string>> str_list(const std::string& key,
                                                   bool allow_comma_string = false);
  std::optional<YamlMap> map(const std::string& key);
  // Sequence of mappings.
  std::optional<std::vector<YamlMap>> map_list(const std::string& key);
  // Raw access for keys whose shape varies; marks the key as read.
  YAML::Node raw(const std::string& key);
  // Keys in document order (for maps keyed by user names, such as checks).
  std::vector<std::string> keys() const;

  // Throws ConfigError for the first key that was never read, suggesting a near name.
  void finish() const;

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;
  [[noreturn]] void fail_here(const std::string& problem) const;

  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  std::string key_path(const std::string& key) const;
  YAML::Node node() const { return node_; }

 private:
  YAML::Node value(const std::string& key);  // marks as read; null when absent
  YAML::Node node_;
  std::string file_, path_;
  std::set<std::string> read_;
};

// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace fener
