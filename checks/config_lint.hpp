// Check "config_lint": patroni.yml (as summarised in Config) and the etcd environment files
// against the setup guide's rules, each of which once broke a cluster silently.
//   passing  - no finding in the files checked (the message names them), or nothing to
//              check on this node.
//   warning  - works today but is wrong or fragile: patroni.yml readable by everyone (it
//              holds Patroni's REST and PostgreSQL passwords), lines systemd ignores (YAML such as
//              `enable-v2: true`, `export`), the two env files disagree, advertised URLs
//              that do not carry this node's address.
//   critical - the cluster is or will be broken: Patroni's `host:` with several addresses,
//              Patroni knowing fewer etcd members than exist, ETCD_NAME missing or absent
//              from ETCD_INITIAL_CLUSTER, peer URLs disagreeing with it, no cluster token,
//              no v2 API for Patroni's `etcd:` section, an explicitly listed file missing.
//   unknown  - an env file exists but could not be read (and nothing worse was found).
// Certificates (Config::tls_files: etcd's and Patroni's client certificates, Patroni's
// REST API certificate, etcd's server and peer certificates) are read with OpenSSL:
// unreadable, unparsable, expired, not yet valid or a key not matching is critical;
// ending within `cert_warning_days` (default 14) is a warning.
// The status is the worst finding; the message names it and counts the rest ("(+N more)");
// evidence lists every finding as {severity, file, line, key, message}.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/envfile.hpp"
#include "src/result.hpp"
#include "src/tls.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct LintFinding {
  Status severity = Status::warning;
  std::string file;
  int line = 0;         // 1-based; 0 when not known
  std::string key;      // e.g. "ETCD_NAME", "etcd.host"; "" when none
  std::string message;  // without the "file:line: " prefix
};

// "file:line: message" (line left out when 0, file when empty).
std::string describe(const LintFinding& f);

struct EnvFileRead {
  enum class State { ok, missing, error };
  std::string path;
  State state = State::missing;
  std::string error;  // strerror text when state == error
  EnvFile parsed;     // when state == ok
};

// Everything the lint reads from disk, gathered on the worker.
struct ConfigLintInputs {
  std::vector<EnvFileRead> env_files;    // in config.etcd_env_files order
  int patroni_hosts_line = 0;            // line of etcd(3).host(s) in patroni.yml; 0 unknown
  std::vector<LintFinding> tls;          // lint_tls_files() of config.tls_files
  std::vector<std::string> tls_checked;  // the certificate files read
  int patroni_config_mode = -1;          // patroni.yml's permission bits; -1 when not known
};

// Days before a certificate's end that it is reported (warning); config_lint's
// `cert_warning_days`.
inline constexpr int kDefaultCertWarningDays = 14;

// Blocking. Never throws for I/O problems: they are recorded in the result.
EnvFileRead read_env_file(const std::string& path);
ConfigLintInputs read_config_lint_inputs(const Config& config,
                                         int cert_warning_days = kDefaultCertWarningDays);

// The certificate files in sets (blocking: reads them; OpenSSL parses them), at time now:
//   critical - a file unreadable or not PEM, a certificate expired or not yet valid, a key
//              that does not belong to its certificate, a CA file without certificates;
//   warning  - a certificate (or CA) ending within warning_days.
// checked (optional) receives every file read.
std::vector<LintFinding> lint_tls_files(const std::vector<TlsFileSet>& sets, std::time_t now,
                                        int warning_days,
                                        std::vector<std::string>* checked = nullptr);

// Pure rule sets, in the order the check applies them.
std::vector<LintFinding> lint_patroni(const Config& config, const ConfigLintInputs& inputs);
std::vector<LintFinding> lint_etcd_env_file(const Config& config, const EnvFileRead& file);
std::vector<LintFinding> lint_env_files_agree(const std::vector<EnvFileRead>& files);
// patroni.yml readable by everyone: a warning (it is Patroni's file, fener still reads it).
std::vector<LintFinding> lint_patroni_mode(const Config& config, const ConfigLintInputs& inputs);

// Pure: every rule, then the verdict.
CheckResult evaluate_config_lint(const Config& config, const ConfigLintInputs& inputs);

// Takes `cert_warning_days` (0..3650, default 14); reads config only, no I/O; does not call
// params.finish().
std::unique_ptr<Check> make_config_lint_check(YamlMap& params, const Config& config);

}  // namespace fener
