#include "src/rules.hpp"

#include <algorithm>

#include "remedies/registry.hpp"
#include "src/guards.hpp"

namespace fener {

namespace {

// `key[field=value]` -> {key, field, value}; a plain key -> {key, "", ""}.
struct Segment {
  std::string key, field, value;
  bool select = false;
};

std::vector<Segment> split_path(const std::string& path) {
  std::vector<Segment> out;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    // '.' inside [...] belongs to the selector value.
    std::size_t end = pos;
    int depth = 0;
    while (end < path.size() && (path[end] != '.' || depth > 0)) {
      if (path[end] == '[') ++depth;
      if (path[end] == ']') --depth;
      ++end;
    }
    std::string part = path.substr(pos, end - pos);
    Segment s;
    const auto open = part.find('[');
    if (open != std::string::npos && part.back() == ']') {
      s.key = part.substr(0, open);
      const std::string sel = part.substr(open + 1, part.size() - open - 2);
      const auto eq = sel.find('=');
      s.select = true;
      s.field = sel.substr(0, eq);
      s.value = eq == std::string::npos ? "" : sel.substr(eq + 1);
    } else {
      s.key = part;
    }
    out.push_back(std::move(s));
    pos = end + 1;
  }
  return out;
}

std::string as_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "null";
  return v.dump();
}

void collect(const json& node, const std::vector<Segment>& segs, std::size_t i,
             std::vector<const json*>& out) {
  if (i == segs.size()) {
    out.push_back(&node);
    return;
  }
  const Segment& s = segs[i];
  if (!node.is_object() || !node.contains(s.key)) return;
  const json& child = node[s.key];
  if (!s.select) {
    collect(child, segs, i + 1, out);
    return;
  }
  if (!child.is_array()) return;
  for (const auto& el : child) {
    if (el.is_object() && el.contains(s.field) && as_text(el[s.field]) == s.value)
      collect(el, segs, i + 1, out);
  }
}

std::vector<Status> read_statuses(YamlMap& m, const std::string& key, bool required) {
  if (!m.has(key)) {
    if (required) m.fail(key, "expected a status or a list of them: warning, critical");
    return {};
  }
  auto list = m.str_list(key, true);
  std::vector<Status> out;
  for (const auto& s : *list) {
    auto st = status_from_string(s);
    if (!st || *st == Status::passing)
      m.fail(key, "expected warning or critical, got \"" + s + "\"");
    if (*st == Status::unknown)
      m.fail(key, "unknown means \"could not check\" and never triggers a remedy");
    out.push_back(*st);
  }
  if (out.empty()) m.fail(key, "expected at least one status");
  return out;
}

bool check_configured(const Config& config, const std::string& name) {
  return std::any_of(config.checks.begin(), config.checks.end(),
                     [&](const CheckSpec& c) { return c.name == name; });
}

Trigger read_trigger(YamlMap& when, const Config& config, bool builtin, bool& skip) {
  Trigger t;
  auto check = when.str("check");
  if (!check || check->empty()) when.fail("check", "expected the name of a configured check");
  t.check = *check;
  if (!check_configured(config, t.check)) {
    if (builtin) {
      skip = true;
    } else {
      std::string known;
      for (const auto& c : config.checks) known += (known.empty() ? "" : ", ") + c.name;
      when.fail("check", "no check named \"" + t.check + "\" is configured on this node (" +
                             (known.empty() ? "none" : known) + ")");
    }
  }
  t.statuses = read_statuses(when, "status", true);
  if (auto v = when.integer("consecutive", 1, 1000)) t.consecutive = static_cast<int>(*v);
  if (auto v = when.duration("for", Duration{0})) t.hold_for = *v;
  if (auto w = when.map("within")) {
    if (when.has("consecutive")) when.fail("within", "give either consecutive or within, not both");
    auto count = w->integer("count", 1, 1000);
    auto window = w->duration("window");
    if (!count || !window) w->fail_here("expected count: N and window: DURATION");
    t.within_count = static_cast<int>(*count);
    t.within_window = *window;
    w->finish();
  }
  if (auto v = when.str("message")) {
    try {
      t.message.emplace(*v, std::regex::ECMAScript);
      t.message_pattern = *v;
    } catch (const std::regex_error& e) {
      when.fail("message", std::string("expected a regular expression: ") + e.what());
    }
  }
  if (auto ev = when.map("evidence")) {
    for (const auto& key : ev->keys()) {
      // One value, or a list; values may contain commas and spaces ("start failed").
      std::vector<std::string> values;
      const YAML::Node n = ev->raw(key);
      if (n.IsScalar()) {
        values.push_back(n.Scalar());
      } else if (n.IsSequence()) {
        for (const auto& item : n) {
          if (!item.IsScalar()) ev->fail(key, "expected a value or a list of values");
          values.push_back(item.Scalar());
        }
      }
      if (values.empty()) ev->fail(key, "expected a value or a list of values");
      t.evidence.push_back({key, std::move(values)});
    }
    ev->finish();
  }
  when.finish();
  return t;
}

}  // namespace

bool evidence_matches(const EvidenceMatch& m, const json& evidence) {
  std::vector<const json*> found;
  collect(evidence, split_path(m.path), 0, found);
  for (const json* v : found) {
    const std::string text = as_text(*v);
    if (std::find(m.values.begin(), m.values.end(), text) != m.values.end()) return true;
  }
  return false;
}

bool trigger_matches(const Trigger& t, const CheckResult& r) {
  if (std::find(t.statuses.begin(), t.statuses.end(), r.status) == t.statuses.end()) return false;
  if (t.message && !std::regex_search(r.message, *t.message)) return false;
  for (const auto& m : t.evidence)
    if (!evidence_matches(m, r.evidence)) return false;
  return true;
}

std::vector<Rule> build_rules(const Config& config) {
  std::vector<Rule> out;
  for (const auto& src : config.rules) {
    const bool builtin = src.builtin;
    YamlMap m(src.node, src.file, src.path);
    Rule rule;
    rule.name = src.name;
    rule.file = src.file;
    rule.path = src.path;
    bool skip = false;
    auto when = m.map("when");
    if (!when) m.fail_here("expected when: {check, status, ...}");
    rule.when = read_trigger(*when, config, builtin, skip);
    // A built-in rule for a check this node lacks (no data directory on the HAProxy node)
    // is left out whole: its remedies need what the node does not have either.
    if (skip) continue;
    m.boolean("enabled");
    if (auto v = m.duration("settle", Duration{0})) rule.settle = *v;
    if (auto v = m.integer("recover_after", 1, 1000)) rule.recover_after = static_cast<int>(*v);
    if (auto lim = m.map("limit")) {
      if (auto v = lim->integer("actions", 1, 1000)) rule.max_actions = static_cast<int>(*v);
      if (auto v = lim->duration("window")) rule.window = *v;
      lim->finish();
    }
    if (auto g = m.str_list("guards", true)) {
      for (const auto& name : *g) {
        if (!is_rule_guard(name))
          m.fail("guards",
                 "unknown guard \"" + name + "\"; expected one of: " + rule_guard_names());
      }
      rule.guards = *g;
    }
    auto steps = m.map_list("ladder");
    if (!steps || steps->empty()) m.fail("ladder", "expected a list of remedies, tried in order");
    for (auto& s : *steps) {
      LadderStep step;
      auto type = s.str("remedy");
      if (!type) s.fail_here("each ladder step needs remedy: NAME");
      const RemedyType* rt = find_remedy_type(*type);
      if (!rt)
        s.fail("remedy", "unknown remedy \"" + *type + "\"; expected one of: " + remedy_names());
      step.remedy = *type;
      if (auto v = s.integer("attempts", 1, 100)) step.attempts = static_cast<int>(*v);
      if (auto v = s.duration("timeout", std::chrono::seconds(1))) step.timeout = *v;
      if (auto v = s.boolean("chain")) step.chain = *v;
      if (auto v = s.duration("settle", Duration{0})) step.settle = *v;
      if (auto cond = s.map("if")) {
        StepCondition c;
        auto cc = cond->str("check");
        if (!cc) cond->fail_here("expected check: NAME and status: [...]");
        c.check = *cc;
        c.statuses = read_statuses(*cond, "status", true);
        cond->finish();
        if (!check_configured(config, c.check)) {
          if (!builtin) cond->fail("check", "no check named \"" + c.check + "\" is configured");
          // A built-in condition on a check this node lacks never holds: skip the step.
        }
        step.only_if = std::move(c);
      }
      step.impl = rt->make(s, config);
      s.finish();
      rule.ladder.push_back(std::move(step));
    }
    m.finish();
    if (!skip) out.push_back(std::move(rule));
  }
  return out;
}

std::string_view to_string(Phase p) {
  switch (p) {
    case Phase::idle:
      return "idle";
    case Phase::settling:
      return "settling";
    case Phase::gave_up:
      return "gave_up";
  }
  return "?";
}

void RuleState::observe(const Rule& rule, const CheckResult& r, TimePoint now) {
  if (now < settle_until_) return;  // the fix may still be landing: do not judge
  if (r.status == Status::unknown) {
    match_streak_ = 0;
    return;
  }
  if (trigger_matches(rule.when, r)) {
    if (match_streak_ == 0) streak_since_ = now;
    ++match_streak_;
    clear_streak_ = 0;
    active_ = true;
    recent_matches_.push_back(now);
  } else if (r.status == Status::passing) {
    match_streak_ = 0;
    ++clear_streak_;
    if (active_ && clear_streak_ >= rule.recover_after) {
      recovered_pending_ = step_ > 0 || attempts_ > 0 || gave_up_;
      active_ = false;
      step_ = 0;
      attempts_ = 0;
      gave_up_ = false;
      recent_matches_.clear();
    }
  } else {
    // Failing in another way (Patroni restarting, say): not this rule's finding, and not
    // a recovery either; the ladder keeps its place.
    match_streak_ = 0;
    clear_streak_ = 0;
  }
  const Duration window = rule.when.within_window;
  while (!recent_matches_.empty() && window.count() > 0 && recent_matches_.front() + window < now)
    recent_matches_.pop_front();
}

Verdict RuleState::decide(const Rule& rule, TimePoint now) {
  if (recovered_pending_) {
    recovered_pending_ = false;
    return {Verdict::recovered, 0, "its check passes again"};
  }
  if (chained_) {
    chained_ = false;
    if (step_ < rule.ladder.size() && !gave_up_) return {Verdict::act, step_, "chained"};
  }
  if (now < settle_until_) return {Verdict::none, 0, "settling"};
  const bool triggered =
      rule.when.within_count > 0
          ? static_cast<int>(recent_matches_.size()) >= rule.when.within_count
          : match_streak_ >= rule.when.consecutive &&
                (rule.when.hold_for.count() == 0 || now - streak_since_ >= rule.when.hold_for);
  if (!triggered) return {Verdict::none, 0, "not triggered"};
  if (gave_up_) return {Verdict::none, 0, "gave up; waiting for recovery or `fener rules reset`"};
  if (actions_in_window(rule, now) >= static_cast<std::size_t>(rule.max_actions)) {
    gave_up_ = true;
    return {Verdict::give_up, step_,
            "rate limit: " + std::to_string(rule.max_actions) + " actions within " +
                format_duration(rule.window)};
  }
  while (step_ < rule.ladder.size() && attempts_ >= rule.ladder[step_].attempts) {
    ++step_;
    attempts_ = 0;
  }
  if (step_ >= rule.ladder.size()) {
    gave_up_ = true;
    return {Verdict::give_up, step_, "every remedy of the ladder was tried"};
  }
  return {Verdict::act, step_, ""};
}

void RuleState::acted(const Rule& rule, TimePoint now) {
  in_chain_ = false;
  ++attempts_;
  actions_.push_back(now);
  while (!actions_.empty() && actions_.front() + rule.window <= now) actions_.pop_front();
  const auto& step = rule.ladder[std::min(step_, rule.ladder.size() - 1)];
  settle_until_ = now + step.settle.value_or(rule.settle);
  match_streak_ = 0;
  recent_matches_.clear();
}

void RuleState::chained(TimePoint now) {
  actions_.push_back(now);
  ++step_;
  attempts_ = 0;
  chained_ = true;
  in_chain_ = true;
}

void RuleState::skip_step() {
  in_chain_ = false;
  ++step_;
  attempts_ = 0;
}

void RuleState::hold(const Rule& rule, TimePoint now) {
  in_chain_ = false;
  settle_until_ = now + rule.settle;
  match_streak_ = 0;
  recent_matches_.clear();
}

void RuleState::reset() {
  *this = RuleState{};
}

void RuleState::interrupted(const Rule& rule, TimePoint now, std::size_t step, bool hold) {
  // The fault was there when the action began: a recovery of the check ends the hold.
  active_ = true;
  if (!rule.ladder.empty()) step_ = std::min(step, rule.ladder.size() - 1);
  if (hold) {
    gave_up_ = true;
    return;
  }
  attempts_ = 0;
  acted(rule, now);
}

Phase RuleState::phase(TimePoint now) const {
  if (gave_up_) return Phase::gave_up;
  if (now < settle_until_) return Phase::settling;
  return Phase::idle;
}

std::size_t RuleState::actions_in_window(const Rule& rule, TimePoint now) const {
  return static_cast<std::size_t>(std::count_if(
      actions_.begin(), actions_.end(), [&](TimePoint t) { return t + rule.window > now; }));
}

json RuleState::to_json(const Rule& rule, TimePoint now) const {
  json j = {{"phase", to_string(phase(now))},
            {"step", step_ < rule.ladder.size() ? json(rule.ladder[step_].remedy) : json(nullptr)},
            {"attempts_on_step", attempts_},
            {"streak", match_streak_},
            {"actions_in_window", actions_in_window(rule, now)},
            {"max_actions", rule.max_actions}};
  if (now < settle_until_)
    j["settle_left_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(settle_until_ - now).count();
  return j;
}

}  // namespace fener
