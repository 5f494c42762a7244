#include "src/intent_journal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fener {

using json = nlohmann::json;

namespace {

constexpr const char* kIntentFile = "intent.json";
constexpr const char* kHeldFile = "held.json";

std::string errno_text(int e) {
  return std::strerror(e);
}

bool write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

std::string fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return "cannot open " + dir + ": " + errno_text(errno);
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (rc != 0) return "cannot fsync " + dir + ": " + errno_text(e);
  return "";
}

// "" when the file does not exist.
std::optional<std::string> read_whole(const std::string& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno != ENOENT) error = "cannot read " + path + ": " + errno_text(errno);
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return "cannot remove " + path + ": " + errno_text(errno);
  return fsync_dir(std::filesystem::path(path).parent_path().string());
}

}  // namespace

json Intent::to_json() const {
  return {{"rule", rule},
          {"remedy", remedy},
          {"risk", risk},
          {"step", step},
          {"node", node},
          {"target", target},
          {"lock", {{"key", lock_key}, {"value", lock_value}}},
          {"started_at", started_at},
          {"pid", pid},
          {"boot_id", boot_id}};
}

std::optional<Intent> Intent::from_json(const json& j, std::string& error) {
  if (!j.is_object()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  Intent i;
  auto text = [&](const char* key, std::string& out, bool required) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) {
      if (required && error.empty()) error = std::string("no text field \"") + key + "\"";
      return;
    }
    out = it->get<std::string>();
  };
  text("rule", i.rule, true);
  text("remedy", i.remedy, true);
  text("risk", i.risk, true);
  text("node", i.node, false);
  text("target", i.target, false);
  text("started_at", i.started_at, false);
  text("boot_id", i.boot_id, false);
  if (auto it = j.find("step"); it != j.end() && it->is_number_integer()) i.step = it->get<int>();
  if (auto it = j.find("pid"); it != j.end() && it->is_number_integer()) i.pid = it->get<long>();
  if (auto it = j.find("lock"); it != j.end() && it->is_object()) {
    i.lock_key = it->value("key", "");
    i.lock_value = it->value("value", "");
  }
  if (!error.empty()) return std::nullopt;
  if (i.risk != "disruptive" && i.risk != "destructive") {
    error = "unknown risk \"" + i.risk + "\"";
    return std::nullopt;
  }
  return i;
}

std::string write_file_atomically(const std::string& path, const std::string& content, int mode) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return "cannot create " + tmp + ": " + errno_text(errno);
  if (!write_all(fd, content)) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return "cannot write " + tmp + ": " + errno_text(e);
  }
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return "cannot fsync " + tmp + ": " + errno_text(e);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return "cannot rename " + tmp + " to " + path + ": " + errno_text(e);
  }
  return fsync_dir(std::filesystem::path(path).parent_path().string());
}

std::string current_boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

IntentJournal::IntentJournal(std::string dir) : dir_(std::move(dir)) {}

std::string IntentJournal::intent_path() const {
  return dir_ + "/" + kIntentFile;
}
std::string IntentJournal::held_path() const {
  return dir_ + "/" + kHeldFile;
}

std::string IntentJournal::open() const {
  if (dir_.empty()) return "";
  const std::string hint = " (state_dir in fener.yaml)";
  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0) {
    if (errno != ENOENT) return "state directory " + dir_ + ": " + errno_text(errno) + hint;
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) return "cannot create the state directory " + dir_ + ": " + ec.message() + hint;
    ::chmod(dir_.c_str(), 0750);
    if (::stat(dir_.c_str(), &st) != 0)
      return "state directory " + dir_ + ": " + errno_text(errno) + hint;
  }
  if (!S_ISDIR(st.st_mode)) return "state directory " + dir_ + " is not a directory" + hint;
  if (::access(dir_.c_str(), W_OK | X_OK) != 0)
    return "state directory " + dir_ + " is not writable: " + errno_text(errno) + hint;
  return "";
}

std::string IntentJournal::record(const Intent& intent) const {
  if (dir_.empty()) return "";
  return write_file_atomically(intent_path(), intent.to_json().dump(2) + "\n", 0640);
}

std::string IntentJournal::clear() const {
  if (dir_.empty()) return "";
  return remove_file(intent_path());
}

std::vector<Leftover> IntentJournal::leftovers() const {
  std::vector<Leftover> out;
  if (dir_.empty()) return out;
  std::string error;
  auto text = read_whole(intent_path(), error);
  if (!text && error.empty()) return out;  // none
  Leftover l;
  l.file = intent_path();
  if (!text) {
    l.error = error;
  } else {
    json j = json::parse(*text, nullptr, false);
    if (j.is_discarded()) {
      l.error = "not valid JSON";
    } else {
      l.intent = Intent::from_json(j, l.error);
    }
  }
  out.push_back(std::move(l));
  return out;
}

std::string IntentJournal::discard(const Leftover& l) const {
  return remove_file(l.file);
}

std::string IntentJournal::save_held(const std::map<std::string, HeldRule>& held) const {
  if (dir_.empty()) return "";
  if (held.empty()) return remove_file(held_path());
  json j = json::object();
  for (const auto& [rule, h] : held) j[rule] = {{"reason", h.reason}, {"intent", h.intent}};
  return write_file_atomically(held_path(), j.dump(2) + "\n", 0640);
}

std::map<std::string, HeldRule> IntentJournal::load_held(std::string& error) const {
  std::map<std::string, HeldRule> out;
  if (dir_.empty()) return out;
  auto text = read_whole(held_path(), error);
  if (!text) return out;
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    error = held_path() + ": not a JSON object";
    return out;
  }
  for (const auto& [rule, v] : j.items()) {
    if (!v.is_object()) continue;
    HeldRule h;
    h.reason = v.value("reason", "");
    if (v.contains("intent")) h.intent = v["intent"];
    out[rule] = std::move(h);
  }
  return out;
}

InterruptedPlan plan_interrupted(const Intent& intent, const std::string& boot_id_now) {
  InterruptedPlan p;
  const bool rebooted =
      !intent.boot_id.empty() && !boot_id_now.empty() && intent.boot_id != boot_id_now;
  const std::string when = intent.started_at.empty() ? "" : " started at " + intent.started_at;
  const std::string who = intent.pid > 0 ? " by fener pid " + std::to_string(intent.pid) : "";
  std::string what = intent.remedy + " (" + intent.risk + ", rule " + intent.rule + ")" + when +
                     who + " was interrupted: fener stopped " +
                     (rebooted ? "(the machine rebooted) " : "") + "before it ended";
  if (intent.risk == "destructive") {
    p.hold = true;
    p.count_attempt = false;
    p.message = what +
                ". fener cannot prove it unfinished and does not repeat it on its own; the "
                "rule stays given up. Check the member (patronictl list), then `fener rules "
                "reset " +
                intent.rule + "` to let fener act again";
  } else {
    p.hold = false;
    p.count_attempt = true;
    p.message = what + "; counted as an attempt of the rule, which settles before acting again";
  }
  return p;
}

}  // namespace fener
