#include "src/etcd_lock.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace fener {

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

EtcdLock::EtcdLock(HttpClient& http, std::vector<std::string> endpoints, std::string key,
                   Duration ttl, TlsSettings tls)
    : http_(http),
      endpoints_(std::move(endpoints)),
      tls_(std::move(tls)),
      key_(std::move(key)),
      ttl_(ttl) {}

// The first member that answers decides; a refused or silent member is skipped.
asio::awaitable<HttpResult> EtcdLock::call(std::string method, std::string query,
                                           std::string form) {
  HttpResult last;
  last.error = HttpError::other;
  last.error_text = "no etcd endpoints configured";
  for (const auto& ep : endpoints_) {
    HttpRequest req;
    req.method = method;
    req.tls = tls_;
    req.url = ep + "/v2/keys" + key_ + query;
    req.body = form;
    if (!form.empty()) req.headers = {"Content-Type: application/x-www-form-urlencoded"};
    req.timeout = std::chrono::seconds(2);
    last = co_await http_.fetch(std::move(req));
    if (last.ok() && last.status < 500) co_return last;
  }
  co_return last;
}

asio::awaitable<LockAttempt> EtcdLock::acquire(std::string record) {
  LockAttempt a;
  const auto ttl_s =
      std::max<long long>(1, std::chrono::duration_cast<std::chrono::seconds>(ttl_).count());
  std::string method = "PUT";
  std::string query = "?prevExist=false";
  std::string form = "value=" + url_encode(record) + "&ttl=" + std::to_string(ttl_s);
  auto r = co_await call(std::move(method), std::move(query), std::move(form));
  if (!r.ok() || r.status >= 500) {
    a.error = "etcd did not grant the lock: " +
              (r.ok() ? "HTTP " + std::to_string(r.status) : r.describe());
    co_return a;
  }
  if (r.status == 201) {
    value_ = record;
    a.acquired = true;
    co_return a;
  }
  if (r.status == 412) {
    std::string get = "GET";
    std::string q = "?quorum=true";
    auto h = co_await call(std::move(get), std::move(q), std::string());
    auto body = h.ok() ? parse_json(h.body) : std::nullopt;
    if (body && body->contains("node") && (*body)["node"].contains("value"))
      a.holder = (*body)["node"]["value"].get<std::string>();
    else
      a.holder = "(held; holder unknown)";
    co_return a;
  }
  a.error = "unexpected answer from etcd: HTTP " + std::to_string(r.status) + " " + snippet(r.body);
  co_return a;
}

asio::awaitable<bool> EtcdLock::refresh() {
  if (value_.empty()) co_return false;
  const auto ttl_s =
      std::max<long long>(1, std::chrono::duration_cast<std::chrono::seconds>(ttl_).count());
  std::string method = "PUT";
  std::string query = "?refresh=true&prevExist=true&prevValue=" + url_encode(value_);
  std::string form = "ttl=" + std::to_string(ttl_s);
  auto r = co_await call(std::move(method), std::move(query), std::move(form));
  co_return r.ok() && r.status == 200;
}

asio::awaitable<void> EtcdLock::keep_alive() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(std::max(Duration(1000), ttl_ / 3));
    co_await timer.async_wait(asio::use_awaitable);
    co_await refresh();
  }
}

asio::awaitable<void> EtcdLock::release() {
  if (value_.empty()) co_return;
  std::string method = "DELETE";
  std::string query = "?prevValue=" + url_encode(value_);
  value_.clear();
  co_await call(std::move(method), std::move(query), std::string());
}

}  // namespace fener
