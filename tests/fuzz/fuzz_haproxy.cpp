// HAProxy: haproxy.cfg discovery (stats socket, primary and replica backends) and the
// answer to `show servers state` on the stats socket. Every input goes to both parsers.
#include <string>

#include "checks/haproxy.hpp"
#include "src/haproxy_cfg.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  const HaproxyCfg cfg = parse_haproxy_cfg(input);
  const std::string socket = normalize_stats_socket(cfg.stats_socket);
  (void)stats_socket_is_tcp(socket);
  (void)cfg.backends_with(BackendRole::primary);
  (void)cfg.backends_with(BackendRole::replica);
  (void)role_of_patroni_path(input.substr(0, 64));

  const HaproxyStateParse state = parse_servers_state(input);
  for (const auto& s : state.servers) {
    (void)haproxy_admin_phrase(s);
    (void)s.serving();
  }
  return 0;
}
