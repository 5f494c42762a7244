#include "src/journal_sink.hpp"

// The plain sd_journal_sendv, not the macro adding CODE_FILE= of this file to every record.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace fener {

namespace {

thread_local std::vector<LogField> tl_fields;

// Parses a whole decimal number; false on anything else.
bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

int send_to_journal(const std::vector<std::string>& record) {
  std::vector<iovec> iov(record.size());
  for (std::size_t i = 0; i < record.size(); ++i) {
    // sd_journal_sendv does not write through the pointers; the const_cast is for iovec.
    iov[i].iov_base = const_cast<char*>(record[i].data());
    iov[i].iov_len = record[i].size();
  }
  return sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
}

}  // namespace

LogFields::LogFields(std::vector<LogField> fields) : previous_size_(tl_fields.size()) {
  for (auto& f : fields) tl_fields.push_back(std::move(f));
}

LogFields::LogFields(std::string name, std::string value) : previous_size_(tl_fields.size()) {
  tl_fields.emplace_back(std::move(name), std::move(value));
}

LogFields::~LogFields() {
  tl_fields.resize(previous_size_);
}

const std::vector<LogField>& current_log_fields() {
  return tl_fields;
}

bool journal_stream_matches(std::string_view journal_stream, std::uint64_t dev, std::uint64_t ino) {
  const auto colon = journal_stream.find(':');
  if (colon == std::string_view::npos) return false;
  std::uint64_t d = 0, i = 0;
  if (!parse_u64(journal_stream.substr(0, colon), d) ||
      !parse_u64(journal_stream.substr(colon + 1), i))
    return false;
  return d == dev && i == ino;
}

bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (!env) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return journal_stream_matches(env, static_cast<std::uint64_t>(st.st_dev),
                                static_cast<std::uint64_t>(st.st_ino));
}

int journal_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return 7;  // LOG_DEBUG
    case spdlog::level::info:
      return 6;  // LOG_INFO
    case spdlog::level::warn:
      return 4;  // LOG_WARNING
    case spdlog::level::err:
      return 3;  // LOG_ERR
    case spdlog::level::critical:
      return 2;  // LOG_CRIT
    default:
      return 6;
  }
}

std::vector<std::string> journal_record(spdlog::level::level_enum level, std::string_view message,
                                        const std::vector<LogField>& fields) {
  std::vector<std::string> out;
  out.reserve(3 + fields.size());
  out.push_back("MESSAGE=" + std::string(message));
  out.push_back("PRIORITY=" + std::to_string(journal_priority(level)));
  out.push_back("SYSLOG_IDENTIFIER=fener");
  for (const auto& [name, value] : fields)
    if (!value.empty()) out.push_back(name + "=" + value);
  return out;
}

JournalSink::JournalSink(Sender send) : send_(send ? std::move(send) : Sender(send_to_journal)) {}

void JournalSink::sink_it_(const spdlog::details::log_msg& msg) {
  const std::string_view text(msg.payload.data(), msg.payload.size());
  if (send_(journal_record(msg.level, text, tl_fields)) >= 0) return;
  // journald gone (restarting, say): the line still reaches stderr, which it reads too.
  spdlog::memory_buf_t line;
  formatter_->format(msg, line);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& level, bool journal) {
  std::shared_ptr<spdlog::logger> logger;
  if (journal) {
    // The journal timestamps records itself; the pattern only shapes the fallback line.
    logger = std::make_shared<spdlog::logger>("fener", std::make_shared<JournalSink>());
    logger->set_pattern("%l %v");
  } else {
    logger = std::make_shared<spdlog::logger>("fener",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  return logger;
}

void setup_logging(const std::string& level) {
  spdlog::set_default_logger(make_logger(level, stderr_is_journal()));
}

std::vector<LogField> event_fields(const Event& e) {
  std::vector<LogField> f;
  auto add = [&f](const char* name, const std::string& value) {
    if (!value.empty()) f.emplace_back(name, value);
  };
  auto detail = [&e](const char* key) {
    auto it = e.details.find(key);
    return it != e.details.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  add("NODE", e.node);
  add("SCOPE", e.scope);
  if (e.kind == Event::Kind::check) {
    add("CHECK", e.subject);
    add("CHECK_TYPE", detail("check_type"));
    add("STATUS", e.state);
    add("PREVIOUS_STATUS", e.previous);
  } else {
    add("RULE", e.subject);
    add("REMEDY", detail("remedy"));
    add("OUTCOME", e.state);
    add("STATUS", std::string(to_string(e.severity)));
  }
  return f;
}

void log_event(const Event& e) {
  const auto level = e.severity == Status::passing    ? spdlog::level::info
                     : e.severity == Status::critical ? spdlog::level::err
                                                      : spdlog::level::warn;
  LogFields scope(event_fields(e));
  spdlog::log(level, "{}", e.summary);
}

}  // namespace fener
