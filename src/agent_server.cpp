#include "src/agent_server.hpp"

#include <map>
#include <optional>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "src/api_server.hpp"

namespace fener {

using tcp = asio::ip::tcp;

nlohmann::json AgentStats::to_json() const {
  nlohmann::json a = nlohmann::json::object();
  for (int r = 0; r < 4; ++r)
    for (int v = 0; v < 5; ++v)
      if (answers[r][v])
        a[std::string(to_string(static_cast<AgentRole>(r)))]
         [std::string(to_string(static_cast<AgentVerdict>(v)))] = answers[r][v];
  return {{"connections", connections},     {"rejected", rejected},       {"evicted", evicted},
          {"accept_errors", accept_errors}, {"bad_request", bad_request}, {"answers", a}};
}

namespace {

struct Conn {
  explicit Conn(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  void close() {
    boost::system::error_code ignored;
    socket.close(ignored);
    timer.cancel();
  }
  // Nothing received yet: nothing read and nothing waiting in the kernel. Such a connection
  // is the one given up when the slots run out.
  bool silent() {
    if (!reading || heard) return false;
    boost::system::error_code ec;
    return socket.available(ec) == 0 && !ec;
  }
  tcp::socket socket;
  asio::steady_timer timer;
  bool heard = false;   // something arrived (the read buffer's size does not say: it grows first)
  bool reading = true;  // still waiting for the agent-send line
};

}  // namespace

struct AgentServer::Impl {
  Impl(asio::io_context& i, AgentServerOptions o, Provider p)
      : io(i), opts(std::move(o)), provider(std::move(p)) {}
  asio::io_context& io;
  AgentServerOptions opts;
  Provider provider;
  std::optional<tcp::acceptor> acceptor;
  std::map<std::uint64_t, std::weak_ptr<Conn>> conns;
  std::uint64_t next_id = 0;
  unsigned short bound_port = 0;
  bool started = false;
  bool stopped = false;
  AgentStats stats;

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
    using Clock = std::chrono::steady_clock;
    std::optional<Clock::time_point> warned;  // at most one warning per 10 s
    std::uint64_t unlogged = 0;
    while (!self->stopped && self->acceptor) {
      boost::system::error_code ec;
      tcp::socket s =
          co_await self->acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (self->stopped || ec == asio::error::operation_aborted) co_return;
        // EMFILE, ENFILE and friends: the pending connection stays in the kernel's queue.
        // Pause a little instead of spinning on the error; log at most every 10 s.
        ++self->stats.accept_errors;
        ++unlogged;
        if (!warned || Clock::now() - *warned >= std::chrono::seconds(10)) {
          spdlog::warn(
              "agent-check: accept failed: {} ({} time(s) since the last warning); "
              "pausing 100 ms after each",
              ec.message(), unlogged);
          warned = Clock::now();
          unlogged = 0;
        }
        asio::steady_timer t(self->io, std::chrono::milliseconds(100));
        co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      ++self->stats.connections;
      // At the cap, a connection whose agent-send line is already here takes the slot of
      // the oldest silent one; a silent newcomer is no better than those and is closed.
      if (self->conns.size() >= self->opts.max_connections &&
          (!asks_already(s) || !self->evict_one())) {
        ++self->stats.rejected;
        boost::system::error_code ignored;
        s.close(ignored);
        continue;
      }
      auto c = std::make_shared<Conn>(std::move(s));
      const auto id = self->next_id++;
      self->conns.emplace(id, c);
      asio::co_spawn(self->io, serve(self, c, id), asio::detached);
    }
  }

  static bool asks_already(tcp::socket& s) {
    boost::system::error_code ec;
    return s.available(ec) > 0 && !ec;
  }

  // Closes the oldest connection that has sent nothing yet, to give its slot to a new
  // one; false when there is none (every slot holds a client that asked something).
  bool evict_one() {
    for (auto it = conns.begin(); it != conns.end(); ++it) {
      auto c = it->second.lock();
      if (c && !c->silent()) continue;
      conns.erase(it);
      if (c) {
        c->close();
        ++stats.evicted;
      }
      return true;
    }
    return false;
  }

  static asio::awaitable<void> serve(std::shared_ptr<Impl> self, std::shared_ptr<Conn> c,
                                     std::uint64_t id) {
    struct Forget {
      Impl& impl;
      std::uint64_t id;
      ~Forget() { impl.conns.erase(id); }
    } forget{*self, id};
    boost::system::error_code ec;
    // The optional agent-send line. When it does not come within read_wait the read is
    // cancelled and the default role answers.
    c->timer.expires_after(self->opts.read_wait);
    c->timer.async_wait([c](boost::system::error_code e) {
      if (!e) {
        boost::system::error_code ignored;
        c->socket.cancel(ignored);
      }
    });
    std::string buf;
    co_await c->socket.async_wait(tcp::socket::wait_read,
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      c->heard = true;
      co_await asio::async_read_until(c->socket, asio::dynamic_buffer(buf, 256), '\n',
                                      asio::redirect_error(asio::use_awaitable, ec));
    }
    c->reading = false;
    c->timer.cancel();
    if (self->stopped) co_return;
    if (ec && ec != asio::error::operation_aborted && ec != asio::error::eof) {
      c->close();  // reset, or 256 bytes without a newline: not an agent client
      co_return;
    }
    if (!c->socket.is_open()) co_return;  // evicted while it waited
    bool bad = false;
    const AgentRole role = agent_request_role(buf, self->opts.default_role, &bad);
    if (bad) ++self->stats.bad_request;
    const AgentAnswer a = self->provider(role);
    ++self->stats.answers[static_cast<int>(role)][static_cast<int>(a.verdict)];
    const std::string out = a.line();
    if (!out.empty()) {
      c->timer.expires_after(self->opts.deadline);
      c->timer.async_wait([c](boost::system::error_code e) {
        if (!e) c->close();
      });
      co_await asio::async_write(c->socket, asio::buffer(out),
                                 asio::redirect_error(asio::use_awaitable, ec));
      c->timer.cancel();
    }
    boost::system::error_code ignored;
    c->socket.shutdown(tcp::socket::shutdown_both, ignored);
    c->close();
  }
};

AgentServer::AgentServer(asio::io_context& io, AgentServerOptions options, Provider provider)
    : impl_(std::make_shared<Impl>(io, std::move(options), std::move(provider))) {}

AgentServer::~AgentServer() {
  stop();
}

void AgentServer::start() {
  if (impl_->started) return;
  tcp::acceptor acceptor = bind_listener(impl_->io, impl_->opts.listen);
  impl_->bound_port = acceptor.local_endpoint().port();
  impl_->acceptor.emplace(std::move(acceptor));
  impl_->started = true;
  asio::co_spawn(impl_->io, Impl::accept_loop(impl_), asio::detached);
}

void AgentServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->acceptor) {
    boost::system::error_code ignored;
    impl_->acceptor->close(ignored);
  }
  for (auto& [id, weak] : impl_->conns)
    if (auto c = weak.lock()) c->close();
}

void AgentServer::update(const AgentServerOptions& options) {
  const std::string listen = impl_->opts.listen;
  impl_->opts = options;
  impl_->opts.listen = listen;
}

unsigned short AgentServer::port() const {
  return impl_->bound_port;
}

std::size_t AgentServer::connections() const {
  return impl_->conns.size();
}

const AgentStats& AgentServer::stats() const {
  return impl_->stats;
}

AgentRole agent_request_role(std::string_view received, AgentRole default_role, bool* bad) {
  if (bad) *bad = false;
  const std::string_view line = received.substr(0, received.find('\n'));
  if (line.empty()) return default_role;
  if (auto r = agent_role_from_string(line)) return *r;
  if (bad) *bad = true;
  return default_role;
}

}  // namespace fener
