#include "src/config_error.hpp"

namespace fener {

namespace {
std::string format(const std::string& file, int line, int column, const std::string& key,
                   const std::string& problem) {
  std::string out = file.empty() ? std::string("<config>") : file;
  if (line > 0) {
    out += ":" + std::to_string(line);
    if (column > 0) out += ":" + std::to_string(column);
  }
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + problem;
}
}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key,
                         std::string problem)
    : std::runtime_error(format(file, line, column, key, problem)),
      file_(std::move(file)),
      key_(std::move(key)),
      problem_(std::move(problem)),
      line_(line),
      column_(column) {}

}  // namespace fener
