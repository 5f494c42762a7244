// The one interface every check implements, and the context it runs in.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "src/config.hpp"
#include "src/result.hpp"

namespace fener {

namespace asio = boost::asio;

class HttpClient;
class Worker;

// What a running check may use. Checks never block the loop: network through `http`,
// filesystem and /proc through `offload(worker, ...)`.
struct CheckContext {
  HttpClient& http;
  Worker& worker;
  Duration timeout;  // this run's deadline; pass it to HTTP requests
};

class Check {
 public:
  virtual ~Check() = default;
  // One probe. The scheduler also cancels it at the deadline, so a check's own waits
  // must honour cancellation (HttpClient::fetch and offload do).
  virtual asio::awaitable<CheckResult> run(CheckContext& ctx) = 0;
};

// Builds a check from its YAML parameters and the effective config. Validates
// everything here (throwing ConfigError via params.fail); must not do I/O.
using CheckFactory = std::function<std::unique_ptr<Check>(YamlMap& params, const Config& config)>;

}  // namespace fener
