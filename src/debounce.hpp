// Rise/fall thresholds: how many consecutive results it takes to change what is reported.
// Pure logic; the scheduler feeds it one raw result at a time.
#pragma once

#include <optional>

#include "src/result.hpp"

namespace fener {

class Debouncer {
 public:
  Debouncer(int rise, int fall) : rise_(rise < 1 ? 1 : rise), fall_(fall < 1 ? 1 : fall) {}

  // Feeds one raw status; returns the new published status when it changes. The first
  // result is published at once: at start there is nothing to protect from flapping.
  std::optional<Status> feed(Status raw) {
    if (raw == candidate_) {
      ++streak_;
    } else {
      candidate_ = raw;
      streak_ = 1;
    }
    if (!published_) {
      published_ = raw;
      return raw;
    }
    if (raw == *published_) return std::nullopt;
    const int need = raw == Status::passing ? rise_ : fall_;
    if (streak_ < need) return std::nullopt;
    published_ = raw;
    return raw;
  }

  std::optional<Status> published() const { return published_; }
  int streak() const { return streak_; }

 private:
  int rise_, fall_;
  std::optional<Status> published_;
  Status candidate_ = Status::unknown;
  int streak_ = 0;
};

}  // namespace fener
