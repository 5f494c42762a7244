// A configuration error that names file, line, column, key and what was expected.
#pragma once

#include <stdexcept>
#include <string>

namespace fener {

// Exit code for configuration errors (EX_CONFIG from sysexits.h).
inline constexpr int kExitConfig = 78;

class ConfigError : public std::runtime_error {
 public:
  // line and column are 1-based; 0 when not known.
  ConfigError(std::string file, int line, int column, std::string key, std::string problem);

  const std::string& file() const { return file_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& key() const { return key_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string file_, key_, problem_;
  int line_, column_;
};

}  // namespace fener
