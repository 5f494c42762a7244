// Cluster-wide mutual exclusion for disruptive and destructive remedies: a key in etcd
// created only if absent (v2 `prevExist=false`) with a TTL, so two nodes never act at
// once and the lock expires by itself if its holder dies. Refreshed while the action
// runs; released with compare-and-delete so a node never deletes another's lock.
#pragma once

#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "src/http_client.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct LockAttempt {
  bool acquired = false;
  std::string holder;  // the holder's record when someone else has it
  std::string error;   // why it could not be asked (no etcd answered, ...)
};

class EtcdLock {
 public:
  // tls: how etcd is reached over https (Config::etcd_tls).
  EtcdLock(HttpClient& http, std::vector<std::string> endpoints, std::string key, Duration ttl,
           TlsSettings tls = {});

  // `record` is stored as the value: who holds it and why (JSON text).
  asio::awaitable<LockAttempt> acquire(std::string record);
  // Extends the TTL of our lock; false when it is no longer ours.
  asio::awaitable<bool> refresh();
  // Refreshes every ttl/3 until cancelled (run it `||` the action).
  asio::awaitable<void> keep_alive();
  asio::awaitable<void> release();

  const std::string& key() const { return key_; }
  Duration ttl() const { return ttl_; }

 private:
  asio::awaitable<HttpResult> call(std::string method, std::string query, std::string form);

  HttpClient& http_;
  std::vector<std::string> endpoints_;
  TlsSettings tls_;
  std::string key_;  // e.g. /fener/liman/lock
  Duration ttl_;
  std::string value_;  // our record while we hold it
};

// application/x-www-form-urlencoded / query escaping.
std::string url_encode(const std::string& s);

}  // namespace fener
