// etcd environment files (/etc/etcd/etcd.conf, /etc/default/etcd): the EnvironmentFile=
// parser, the values read from them (ETCD_INITIAL_CLUSTER, URL lists, URLs) and the
// config_lint rules applied to the parsed file.
#include <sstream>
#include <string>

#include "checks/config_lint.hpp"
#include "src/config.hpp"
#include "src/envfile.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  EnvFileRead file;
  file.path = "/etc/etcd/etcd.conf";
  file.state = EnvFileRead::State::ok;
  file.parsed = parse_env_file(input);
  for (const auto& e : file.parsed.entries) {
    (void)etcd_env_name_for_flag(e.key);
    (void)parse_url(e.value);
    for (const auto& u : split_url_list(e.value)) (void)parse_url(u);
    const InitialCluster ic = parse_initial_cluster(e.value);
    for (const auto& n : ic.names()) (void)ic.urls_of(n);
  }
  (void)file.parsed.find("ETCD_NAME");
  std::istringstream lines(input);
  for (std::string line; std::getline(lines, line);) (void)looks_like_yaml(line);

  Config config;
  config.node_name = "kaptan1";
  config.node_address = "10.0.0.2";
  for (const auto& f : lint_etcd_env_file(config, file)) (void)describe(f);
  EnvFileRead other = file;
  other.path = "/etc/default/etcd";
  (void)lint_env_files_agree({file, other});
  return 0;
}
