// The Prometheus registry: exact exposition text, escaping, name rules, ordering.
#include "src/metrics.hpp"

#include <cmath>
#include <limits>

#include <doctest/doctest.h>

using namespace fener;

TEST_CASE("metrics: exact text with HELP, TYPE, sorted families and labels") {
  MetricsRegistry m;
  m.declare("fener_zeta", MetricType::gauge, "Last family by name.");
  m.declare("fener_actions_total", MetricType::counter, "Actions taken.");
  m.declare("fener_empty", MetricType::gauge, "No samples yet.");
  m.add("fener_actions_total", {{"rule", "b"}, {"outcome", "failed"}});
  m.add("fener_actions_total", {{"outcome", "failed"}, {"rule", "b"}}, 2);
  m.add("fener_actions_total", {{"rule", "a"}, {"outcome", "succeeded"}});
  m.set("fener_zeta", {}, 1.5);
  CHECK(m.render() ==
        "# HELP fener_actions_total Actions taken.\n"
        "# TYPE fener_actions_total counter\n"
        "fener_actions_total{outcome=\"failed\",rule=\"b\"} 3\n"
        "fener_actions_total{outcome=\"succeeded\",rule=\"a\"} 1\n"
        "# HELP fener_empty No samples yet.\n"
        "# TYPE fener_empty gauge\n"
        "# HELP fener_zeta Last family by name.\n"
        "# TYPE fener_zeta gauge\n"
        "fener_zeta 1.5\n");
}

TEST_CASE("metrics: label values and help are escaped") {
  CHECK(escape_label_value(R"(a\b"c)"
                           "\nd") == R"(a\\b\"c\nd)");
  CHECK(escape_help("line\\one\ntwo") == "line\\\\one\\ntwo");
  MetricsRegistry m;
  m.declare("x", MetricType::gauge, "Help with a\nnewline.");
  m.set("x", {{"path", "C:\\dir \"q\""}}, 0);
  CHECK(m.render() ==
        "# HELP x Help with a\\nnewline.\n# TYPE x gauge\nx{path=\"C:\\\\dir \\\"q\\\"\"} 0\n");
}

TEST_CASE("metrics: values in the forms Prometheus reads") {
  CHECK(format_metric_value(0) == "0");
  CHECK(format_metric_value(42) == "42");
  CHECK(format_metric_value(-3) == "-3");
  CHECK(format_metric_value(0.25) == "0.25");
  CHECK(format_metric_value(1764317625.123) == "1764317625.123");
  CHECK(format_metric_value(std::nan("")) == "NaN");
  CHECK(format_metric_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_metric_value(-std::numeric_limits<double>::infinity()) == "-Inf");
}

TEST_CASE("metrics: invalid names, counters without _total and misuse are refused") {
  CHECK(valid_metric_name("fener_check_status"));
  CHECK(valid_metric_name("job:rate_5m"));
  CHECK_FALSE(valid_metric_name(""));
  CHECK_FALSE(valid_metric_name("1abc"));
  CHECK_FALSE(valid_metric_name("a-b"));
  CHECK(valid_label_name("check"));
  CHECK_FALSE(valid_label_name("__name__"));
  CHECK_FALSE(valid_label_name("a:b"));
  CHECK_FALSE(valid_label_name("é"));

  MetricsRegistry m;
  CHECK_THROWS_AS(m.declare("bad-name", MetricType::gauge, "h"), std::invalid_argument);
  CHECK_THROWS_WITH(m.declare("fener_actions", MetricType::counter, "h"),
                    "counter \"fener_actions\" must end in _total");
  m.declare("g", MetricType::gauge, "h");
  m.declare("g", MetricType::gauge, "h");  // the same again is fine
  CHECK_THROWS_AS(m.declare("g", MetricType::gauge, "other"), std::invalid_argument);
  CHECK_THROWS_WITH(m.set("nope", {}, 1), "metric \"nope\" not declared");
  CHECK_THROWS_WITH(m.set("g", {{"bad label", "x"}}, 1), "invalid label name \"bad label\"");
  CHECK_THROWS_WITH(m.set("g", {{"a", "x"}, {"a", "y"}}, 1), "label \"a\" given twice");
  m.declare("c_total", MetricType::counter, "h");
  CHECK_THROWS_WITH(m.add("c_total", {}, -1), "counter \"c_total\" cannot go down");
}
