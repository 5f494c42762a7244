// Webhook receivers' answers: status, body and Retry-After, classified for each format
// (delivered, retry, permanent). The first two bytes pick the status; the rest, up to the
// first newline, is the Retry-After value and what follows the body.
#include <chrono>
#include <string>

#include "src/alerts.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  if (size < 2) return 0;
  const long status = 100 + (data[0] | (data[1] << 8)) % 500;
  const std::string rest = fuzz::text(data + 2, size - 2);
  const auto nl = rest.find('\n');
  const std::string retry_after = rest.substr(0, nl);
  const std::string body = nl == std::string::npos ? "" : rest.substr(nl + 1);
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'795'000'000));
  (void)alerting::parse_retry_after(retry_after, now);
  HttpResult r = fuzz::answer(status, body);
  r.headers.emplace_back("retry-after", retry_after);
  for (auto f : {WebhookFormat::fener, WebhookFormat::slack, WebhookFormat::alertmanager})
    (void)alerting::judge(r, f);
  return 0;
}
