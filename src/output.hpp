// Rendering check results: the human table and the JSON document of `fener check`.
#pragma once

#include <string>
#include <vector>

#include "src/result.hpp"

namespace fener {

struct NamedResult {
  std::string name;
  std::string type;
  CheckResult result;
};

Status worst_status(const std::vector<NamedResult>& results);

// {"node", "status", "checks": [{"name","type","status","message","evidence","duration_ms"}]}
json results_json(const std::string& node, const std::vector<NamedResult>& results);

// NODE / CHECK / STATUS / MESSAGE columns; status coloured when `color`.
std::string results_table(const std::string& node, const std::vector<NamedResult>& results,
                          bool color);

}  // namespace fener
