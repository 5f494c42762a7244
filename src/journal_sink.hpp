// fener's log output: plain lines on stderr, or, when stderr is connected to the journal,
// journal records with PRIORITY=, SYSLOG_IDENTIFIER=fener and structured fields (CHECK=,
// STATUS=, REMEDY=, RULE=, NODE=, ...) that `journalctl -u fener CHECK=datadir` selects on.
//
// Call sites keep using spdlog as before. A log call carries fields when it is made inside
// a LogFields scope, or through log_event(), which logs an Event's summary with its fields.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/details/log_msg.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include "src/events.hpp"

namespace fener {

// One structured field: an upper-case journal field name (A-Z, 0-9, _; not starting with
// _) and its value.
using LogField = std::pair<std::string, std::string>;

// Attaches fields to every log call this thread makes while the scope lives; scopes nest.
// Thread-local, because spdlog's synchronous loggers call their sinks on the logging
// thread.
class LogFields {
 public:
  explicit LogFields(std::vector<LogField> fields);
  // One field. (With a braced list of one pair, the vector overload is ambiguous.)
  LogFields(std::string name, std::string value);
  ~LogFields();
  LogFields(const LogFields&) = delete;
  LogFields& operator=(const LogFields&) = delete;

 private:
  std::size_t previous_size_;
};

// The fields in effect on this thread.
const std::vector<LogField>& current_log_fields();

// systemd sets JOURNAL_STREAM="DEV:INO" (decimal) for a service whose stderr goes to the
// journal. The variable is inherited, so it only counts when it names the very file fd 2
// is: a child whose stderr was redirected must not log to the journal.
bool journal_stream_matches(std::string_view journal_stream, std::uint64_t dev, std::uint64_t ino);
// JOURNAL_STREAM against fstat(2).
bool stderr_is_journal();

// syslog priority (0 emerg .. 7 debug) for an spdlog level.
int journal_priority(spdlog::level::level_enum level);

// The journal record of one log call: MESSAGE=, PRIORITY=, SYSLOG_IDENTIFIER=fener, then
// the fields with a value (an empty value means "not known here" and is left out; later
// duplicates of a name are kept: the journal stores every value).
std::vector<std::string> journal_record(spdlog::level::level_enum level, std::string_view message,
                                        const std::vector<LogField>& fields);

// An spdlog sink writing journal records through sd_journal_sendv (a datagram to journald's
// socket). Records journald does not take are written to stderr as plain lines instead.
class JournalSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Returns 0 on success or a negative errno, like sd_journal_sendv. Tests pass their own.
  using Sender = std::function<int(const std::vector<std::string>& record)>;
  explicit JournalSink(Sender send = {});

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  Sender send_;
};

// The daemon's logger, named "fener": the journal when `journal`, stderr lines with a
// timestamp otherwise.
std::shared_ptr<spdlog::logger> make_logger(const std::string& level, bool journal);
// make_logger(level, stderr_is_journal()) as the default logger.
void setup_logging(const std::string& level);

// The structured fields of an event: NODE=, SCOPE=; for a check CHECK=, CHECK_TYPE=,
// STATUS= (the new status), PREVIOUS_STATUS=; for a remedy RULE=, REMEDY=, OUTCOME= (started,
// succeeded, failed, ...) and STATUS= (its severity). Absent values are left out.
std::vector<LogField> event_fields(const Event& e);

// Logs e.summary with event_fields(e), at info when passing, warn for warning and
// unknown, error for critical.
void log_event(const Event& e);

}  // namespace fener
