// The table of check types, and building configured checks from it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"

namespace fener {

struct CheckType {
  std::string name;  // the `type` in configuration; equals the file name in checks/
  CheckFactory make;
  std::string summary;  // one line for --help
};

// Every check type fener knows, in display order.
const std::vector<CheckType>& check_types();
const CheckType* find_check_type(const std::string& name);

struct BuiltCheck {
  CheckSpec spec;
  std::unique_ptr<Check> check;
};

// Builds every configured check, validating its parameters (throws ConfigError).
std::vector<BuiltCheck> build_checks(const Config& config);

}  // namespace fener
