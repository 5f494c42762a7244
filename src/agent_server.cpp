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
  return {{"connections", connections},
          {"rejected", rejected},
          {"bad_request", bad_request},
          {"answers", a}};
}

namespace {

struct Conn {
  explicit Conn(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  void close() {
    boost::system::error_code ignored;
    socket.close(ignored);
    timer.cancel();
  }
  tcp::socket socket;
  asio::steady_timer timer;
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
    while (!self->stopped && self->acceptor) {
      boost::system::error_code ec;
      tcp::socket s =
          co_await self->acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (self->stopped || ec == asio::error::operation_aborted) co_return;
        // EMFILE and friends: back off a little instead of spinning on the error.
        spdlog::warn("agent-check: accept failed: {}", ec.message());
        asio::steady_timer t(self->io, std::chrono::milliseconds(100));
        co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      ++self->stats.connections;
      if (self->conns.size() >= self->opts.max_connections) {
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
    co_await asio::async_read_until(c->socket, asio::dynamic_buffer(buf, 256), '\n',
                                    asio::redirect_error(asio::use_awaitable, ec));
    c->timer.cancel();
    if (self->stopped) co_return;
    if (ec && ec != asio::error::operation_aborted && ec != asio::error::eof) {
      c->close();  // reset, or 256 bytes without a newline: not an agent client
      co_return;
    }
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
