#include "src/output.hpp"

#include <algorithm>

namespace fener {

Status worst_status(const std::vector<NamedResult>& results) {
  Status w = Status::passing;
  for (const auto& r : results) w = worst(w, r.result.status);
  return w;
}

json results_json(const std::string& node, const std::vector<NamedResult>& results) {
  json checks = json::array();
  for (const auto& r : results) {
    checks.push_back({{"name", r.name},
                      {"type", r.type},
                      {"status", to_string(r.result.status)},
                      {"message", r.result.message},
                      {"evidence", r.result.evidence},
                      {"duration_ms", r.result.duration.count()}});
  }
  return {{"node", node}, {"status", to_string(worst_status(results))}, {"checks", checks}};
}

std::string results_table(const std::string& node, const std::vector<NamedResult>& results,
                          bool color) {
  std::size_t wn = 4, wc = 5, ws = 6;
  wn = std::max(wn, node.size());
  for (const auto& r : results) wc = std::max(wc, r.name.size());
  for (const auto& r : results) ws = std::max(ws, to_string(r.result.status).size());
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(s.size(), w), ' ');
    return s;
  };
  auto paint = [&](Status s) {
    std::string text = pad(std::string(to_string(s)), ws);
    if (!color) return text;
    const char* code = s == Status::passing    ? "32"
                       : s == Status::warning  ? "33"
                       : s == Status::critical ? "31"
                                               : "35";
    return std::string("\033[") + code + "m" + text + "\033[0m";
  };
  std::string out =
      pad("NODE", wn) + "  " + pad("CHECK", wc) + "  " + pad("STATUS", ws) + "  MESSAGE\n";
  for (const auto& r : results) {
    out += pad(node, wn) + "  " + pad(r.name, wc) + "  " + paint(r.result.status) + "  " +
           r.result.message + "\n";
  }
  return out;
}

}  // namespace fener
