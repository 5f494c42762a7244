#include "src/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace fener {

namespace {

bool name_char(char c, bool first, bool colon_ok) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon_ok && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

bool valid_name(std::string_view name, bool colon_ok) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, colon_ok)) return false;
  return true;
}

}  // namespace

bool valid_metric_name(std::string_view name) {
  return valid_name(name, true);
}

bool valid_label_name(std::string_view name) {
  return valid_name(name, false) && name.substr(0, 2) != "__";
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_metric_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Shortest representation that reads back exactly; whole numbers come out as "42".
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

void MetricsRegistry::declare(const std::string& name, MetricType type, const std::string& help) {
  if (!valid_metric_name(name)) throw std::invalid_argument("invalid metric name \"" + name + "\"");
  if (type == MetricType::counter &&
      (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0))
    throw std::invalid_argument("counter \"" + name + "\" must end in _total");
  auto it = families_.find(name);
  if (it != families_.end()) {
    if (it->second.type != type || it->second.help != help)
      throw std::invalid_argument("metric \"" + name + "\" declared twice, differently");
    return;
  }
  families_.emplace(name, Family{type, help, {}});
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name) {
  auto it = families_.find(name);
  if (it == families_.end()) throw std::invalid_argument("metric \"" + name + "\" not declared");
  return it->second;
}

Labels MetricsRegistry::normalize(const Labels& labels) {
  Labels sorted = labels;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (!valid_label_name(sorted[i].first))
      throw std::invalid_argument("invalid label name \"" + sorted[i].first + "\"");
    if (i > 0 && sorted[i].first == sorted[i - 1].first)
      throw std::invalid_argument("label \"" + sorted[i].first + "\" given twice");
  }
  return sorted;
}

void MetricsRegistry::set(const std::string& name, const Labels& labels, double value) {
  Family& f = family(name);
  f.samples[normalize(labels)] = value;
}

void MetricsRegistry::add(const std::string& name, const Labels& labels, double delta) {
  Family& f = family(name);
  if (f.type == MetricType::counter && delta < 0)
    throw std::invalid_argument("counter \"" + name + "\" cannot go down");
  f.samples[normalize(labels)] += delta;
}

std::string MetricsRegistry::render() const {
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + escape_help(f.help) + "\n";
    out += "# TYPE " + name + (f.type == MetricType::counter ? " counter\n" : " gauge\n");
    for (const auto& [labels, value] : f.samples) {
      out += name;
      if (!labels.empty()) {
        out += '{';
        for (std::size_t i = 0; i < labels.size(); ++i) {
          if (i > 0) out += ',';
          out += labels[i].first + "=\"" + escape_label_value(labels[i].second) + "\"";
        }
        out += '}';
      }
      out += " " + format_metric_value(value) + "\n";
    }
  }
  return out;
}

}  // namespace fener
