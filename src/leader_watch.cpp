#include "src/leader_watch.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "src/etcd_lock.hpp"
#include "src/http_client.hpp"
#include "src/result.hpp"

namespace fener {

LeaderKeyEvent parse_leader_answer(long status, const std::string& body,
                                   std::optional<std::uint64_t> etcd_index) {
  LeaderKeyEvent e;
  auto doc = parse_json(body);
  if (!doc || !doc->is_object()) {
    e.error = "HTTP " + std::to_string(status) + " with a body that is not a JSON object";
    return e;
  }
  const json& d = *doc;
  if (d.contains("errorCode")) {
    const auto code = d["errorCode"].is_number_integer() ? d["errorCode"].get<int>() : -1;
    const auto index = d.contains("index") && d["index"].is_number_unsigned()
                           ? d["index"].get<std::uint64_t>()
                           : etcd_index.value_or(0);
    if (code == 100) {  // Key not found: no leader now; wait for its creation
      e.kind = LeaderKeyEvent::Kind::absent;
      e.next_index = index + 1;
      return e;
    }
    if (code == 401) {  // the index we asked for is gone: read afresh
      e.kind = LeaderKeyEvent::Kind::resync;
      return e;
    }
    const std::string message =
        d.contains("message") && d["message"].is_string() ? d["message"].get<std::string>() : "";
    e.error = "etcd error " + std::to_string(code) + ": " + message;
    return e;
  }
  const std::string action =
      d.contains("action") && d["action"].is_string() ? d["action"].get<std::string>() : "";
  if (!d.contains("node") || !d["node"].is_object()) {
    e.error = "answer without a node (action \"" + action + "\")";
    return e;
  }
  const json& n = d["node"];
  const std::uint64_t modified =
      n.contains("modifiedIndex") && n["modifiedIndex"].is_number_unsigned()
          ? n["modifiedIndex"].get<std::uint64_t>()
          : 0;
  // After a plain GET, wait from the cluster's index (the key's own may be far behind and
  // its events pushed out of etcd's 1000-event history); after an event, from the event.
  std::uint64_t base = modified;
  if (action == "get" && etcd_index) base = std::max(base, *etcd_index);
  e.next_index = base + 1;
  if (action == "expire" || action == "delete" || action == "compareAndDelete") {
    e.kind = LeaderKeyEvent::Kind::absent;
    return e;
  }
  if (!n.contains("value") || !n["value"].is_string()) {
    e.error = "leader key without a string value";
    e.next_index = 0;
    return e;
  }
  e.kind = LeaderKeyEvent::Kind::value;
  e.leader = n["value"].get<std::string>();
  return e;
}

struct LeaderWatch::Impl {
  Impl(asio::io_context& i, HttpClient& h, std::vector<std::string> eps, std::string s, OnChange f,
       TlsSettings t)
      : io(i),
        http(h),
        endpoints(std::move(eps)),
        scope(std::move(s)),
        on_change(std::move(f)),
        tls(std::move(t)) {}
  asio::io_context& io;
  HttpClient& http;
  std::vector<std::string> endpoints;
  std::string scope;
  OnChange on_change;
  TlsSettings tls;
  std::optional<std::string> leader;
  bool known_once = false;
  std::uint64_t errors = 0;
  std::uint64_t changes = 0;
  bool running = false;
  asio::cancellation_signal stop_signal;

  void set(std::optional<std::string> l) {
    if (known_once && l == leader) return;
    known_once = true;
    leader = std::move(l);
    ++changes;
    if (on_change) on_change(leader);
  }

  static asio::awaitable<void> loop(std::shared_ptr<Impl> self) {
    std::size_t ep = 0;
    std::uint64_t index = 0;
    int failures = 0;
    asio::steady_timer backoff(self->io);
    while (self->running) {
      const std::string key = self->endpoints[ep % self->endpoints.size()] + "/v2/keys/service/" +
                              url_encode(self->scope) + "/leader";
      HttpRequest req;
      req.tls = self->tls;
      req.max_body = 64 * 1024;
      if (index == 0) {
        req.url = key + "?quorum=true";
        req.timeout = std::chrono::seconds(3);
      } else {
        req.url = key + "?wait=true&waitIndex=" + std::to_string(index);
        // A long poll: etcd answers at the next change. Patroni rewrites the key every
        // loop_wait (10 s by default), so a healthy cluster answers well within this.
        req.timeout = std::chrono::seconds(30);
      }
      const bool waiting = index != 0;
      HttpResult r = co_await self->http.fetch(std::move(req));
      if (!self->running) co_return;
      LeaderKeyEvent e;
      if (!r.ok()) {
        if (waiting && r.error == HttpError::timeout) {
          // Silence longer than Patroni's refresh: this member may be cut off from the
          // raft leader and serve a frozen store. Read again with quorum, which fails
          // there and moves on to the next endpoint.
          index = 0;
          continue;
        }
        e.error = r.describe();
      } else {
        std::optional<std::uint64_t> etcd_index;
        if (auto h = r.header("x-etcd-index")) {
          try {
            etcd_index = std::stoull(*h);
          } catch (const std::exception&) {
          }
        }
        e = parse_leader_answer(r.status, r.body, etcd_index);
      }
      switch (e.kind) {
        case LeaderKeyEvent::Kind::value:
          failures = 0;
          index = e.next_index;
          self->set(e.leader);
          continue;
        case LeaderKeyEvent::Kind::absent:
          failures = 0;
          index = e.next_index;
          self->set(std::string());
          continue;
        case LeaderKeyEvent::Kind::resync: {
          index = 0;
          backoff.expires_after(std::chrono::milliseconds(50));  // never a tight loop
          boost::system::error_code ec;
          co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          continue;
        }
        case LeaderKeyEvent::Kind::error:
          break;
      }
      ++self->errors;
      ++failures;
      index = 0;
      ++ep;
      // Every endpoint failed once: the leader is not known any more.
      if (failures >= static_cast<int>(self->endpoints.size())) {
        if (failures == static_cast<int>(self->endpoints.size()))
          spdlog::warn("leader watch: no etcd endpoint answers ({}); leader unknown", e.error);
        self->set(std::nullopt);
      }
      backoff.expires_after(std::chrono::milliseconds(failures >= 3 ? 1000 : 100));
      boost::system::error_code ec;
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
};

LeaderWatch::LeaderWatch(asio::io_context& io, HttpClient& http, std::vector<std::string> endpoints,
                         std::string scope, OnChange on_change, TlsSettings tls)
    : impl_(std::make_shared<Impl>(io, http, std::move(endpoints), std::move(scope),
                                   std::move(on_change), std::move(tls))) {}

LeaderWatch::~LeaderWatch() {
  stop();
}

void LeaderWatch::start() {
  if (impl_->running || impl_->endpoints.empty() || impl_->scope.empty()) return;
  impl_->running = true;
  asio::co_spawn(impl_->io, Impl::loop(impl_),
                 asio::bind_cancellation_slot(impl_->stop_signal.slot(), asio::detached));
}

void LeaderWatch::stop() {
  if (!impl_->running) return;
  impl_->running = false;
  impl_->on_change = nullptr;
  impl_->stop_signal.emit(asio::cancellation_type::terminal);
}

const std::optional<std::string>& LeaderWatch::leader() const {
  return impl_->leader;
}
std::uint64_t LeaderWatch::errors() const {
  return impl_->errors;
}
std::uint64_t LeaderWatch::changes() const {
  return impl_->changes;
}

}  // namespace fener
