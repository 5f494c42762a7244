// A small Prometheus registry: counter and gauge families with labelled samples, rendered
// in the text exposition format 0.0.4. Built afresh for every scrape from what the daemon
// knows (counts live with their owners), so it holds no state between scrapes. Names are
// validated when a family is declared; output order is by family name, then by labels,
// so two scrapes of the same state are byte-identical.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fener {

// Label name -> value. Order given does not matter: samples are keyed by sorted labels.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { counter, gauge };

inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_metric_name(std::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*, and not starting with "__" (reserved for Prometheus itself).
bool valid_label_name(std::string_view name);
// Label values: \ -> \\, " -> \", newline -> \n.
std::string escape_label_value(std::string_view value);
// HELP text: \ -> \\, newline -> \n.
std::string escape_help(std::string_view text);
// Sample values as Prometheus reads them: integers without a fraction, the shortest
// exact decimal otherwise, NaN, +Inf, -Inf.
std::string format_metric_value(double v);

class MetricsRegistry {
 public:
  // Declares a family. Throws std::invalid_argument for an invalid name, a counter whose
  // name does not end in _total, or a second declaration with another type or help.
  void declare(const std::string& name, MetricType type, const std::string& help);
  // Sets one sample (the family must be declared; labels must have valid, distinct
  // names). Throws std::invalid_argument otherwise.
  void set(const std::string& name, const Labels& labels, double value);
  // Adds to one sample (starting at 0). Counters only go up: a negative delta throws.
  void add(const std::string& name, const Labels& labels, double delta = 1);

  bool declared(const std::string& name) const { return families_.count(name) != 0; }
  // # HELP, # TYPE and the samples of every family; families without samples still
  // announce themselves with HELP and TYPE.
  std::string render() const;

 private:
  struct Family {
    MetricType type;
    std::string help;
    std::map<Labels, double> samples;  // labels sorted by name
  };
  Family& family(const std::string& name);
  static Labels normalize(const Labels& labels);
  std::map<std::string, Family> families_;
};

}  // namespace fener
