#include "src/http_client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace fener {

namespace {

// The caller's completion handler, type-erased. (Boost 1.81's any_completion_handler
// recurses without end when built from an lvalue of itself.)
struct Completion {
  virtual ~Completion() = default;
  virtual void complete(HttpResult r) = 0;
};

template <class H>
struct CompletionFor final : Completion {
  explicit CompletionFor(H&& handler) : h(std::move(handler)) {}
  void complete(HttpResult r) override {
    asio::get_associated_cancellation_slot(h).clear();
    std::move(h)(std::move(r));
  }
  H h;
};

using Handler = std::unique_ptr<Completion>;
using Clock = std::chrono::steady_clock;

// libcurl wants its global state set up once, before any thread exists.
struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  ~CurlGlobal() { curl_global_cleanup(); }
};

}  // namespace

// One transfer in flight.
struct Transfer {
  std::uint64_t id = 0;  // never reused, unlike CURL* addresses
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  HttpRequest req;
  HttpResult result;
  Handler handler;
  Clock::time_point started;
  bool body_too_large = false;
  bool headers_too_large = false;
  std::size_t header_bytes = 0;
  char error_buf[CURL_ERROR_SIZE] = {};
  // From curl's TLS trace (https only): the server asked for our certificate, and the
  // first alert it sent. curl's error text often misses both (it keeps its first message,
  // e.g. a getpeername() failure once the server has dropped the connection).
  bool cert_requested = false;
  std::string tls_alert;

  ~Transfer() {
    if (easy) curl_easy_cleanup(easy);
    if (headers) curl_slist_free_all(headers);
  }
};

// A socket curl asked us to watch. The descriptor is released, not closed, on removal:
// curl owns the fd.
struct Watch {
  explicit Watch(asio::io_context& io, curl_socket_t fd) : sd(io, fd) {}
  asio::posix::stream_descriptor sd;
  int what = 0;  // CURL_POLL_IN / OUT / INOUT
  bool reading = false;
  bool writing = false;
};

struct HttpClient::Impl : std::enable_shared_from_this<HttpClient::Impl> {
  explicit Impl(asio::io_context& ctx) : io(ctx), timer(ctx) {
    static CurlGlobal global;
    multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &Impl::on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &Impl::on_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, this);
  }

  ~Impl() {
    for (auto& [id, t] : transfers) curl_multi_remove_handle(multi, t->easy);
    transfers.clear();
    for (auto& [fd, w] : watches) w->sd.release();
    watches.clear();
    curl_multi_cleanup(multi);
  }

  asio::io_context& io;
  asio::steady_timer timer;
  CURLM* multi = nullptr;
  std::map<std::uint64_t, std::unique_ptr<Transfer>> transfers;
  std::uint64_t next_id = 1;
  std::map<curl_socket_t, std::shared_ptr<Watch>> watches;
  bool closing = false;

  static size_t on_body(char* data, size_t size, size_t n, void* userp) {
    auto* t = static_cast<Transfer*>(userp);
    const size_t len = size * n;
    if (t->result.body.size() + len > t->req.max_body) {
      t->body_too_large = true;
      return 0;  // makes curl fail the transfer with CURLE_WRITE_ERROR
    }
    t->result.body.append(data, len);
    return len;
  }

  // Response headers are capped too: a peer must not grow our memory through them.
  static constexpr std::size_t kMaxHeaderBytes = 64 * 1024;

  static size_t on_header(char* data, size_t size, size_t n, void* userp) {
    auto* t = static_cast<Transfer*>(userp);
    const size_t len = size * n;
    t->header_bytes += len;
    if (t->header_bytes > kMaxHeaderBytes) {
      t->headers_too_large = true;
      return 0;
    }
    std::string_view line(data, len);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    // A status line starts a new header block (interim 1xx answers, redirects).
    if (line.rfind("HTTP/", 0) == 0) {
      t->result.headers.clear();
      return len;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return len;
    std::string name(line.substr(0, colon));
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    t->result.headers.emplace_back(std::move(name), std::string(value));
    return len;
  }

  static int on_socket(CURL*, curl_socket_t fd, int what, void* userp, void*) {
    auto* self = static_cast<Impl*>(userp);
    if (what == CURL_POLL_REMOVE) {
      auto it = self->watches.find(fd);
      if (it != self->watches.end()) {
        it->second->what = 0;
        boost::system::error_code ignored;
        it->second->sd.cancel(ignored);
        it->second->sd.release();
        self->watches.erase(it);
      }
      return 0;
    }
    auto& w = self->watches[fd];
    if (!w) w = std::make_shared<Watch>(self->io, fd);
    w->what = what;
    self->arm(fd, w);
    return 0;
  }

  static int on_timer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<Impl*>(userp);
    if (timeout_ms < 0) {
      self->timer.cancel();
      return 0;
    }
    // Even a 0 ms timeout must not call back into curl from inside this callback.
    self->timer.expires_after(std::chrono::milliseconds(timeout_ms));
    self->timer.async_wait([weak = self->weak_from_this()](boost::system::error_code ec) {
      auto me = weak.lock();
      if (ec || !me) return;
      int running = 0;
      curl_multi_socket_action(me->multi, CURL_SOCKET_TIMEOUT, 0, &running);
      me->collect();
    });
    return 0;
  }

  void arm(curl_socket_t fd, const std::shared_ptr<Watch>& w) {
    if ((w->what & CURL_POLL_IN) && !w->reading) {
      w->reading = true;
      w->sd.async_wait(asio::posix::descriptor_base::wait_read,
                       [this, fd, weak = std::weak_ptr<Watch>(w),
                        life = weak_from_this()](boost::system::error_code ec) {
                         on_ready(life, weak, fd, ec, CURL_CSELECT_IN, CURL_POLL_IN);
                       });
    }
    if ((w->what & CURL_POLL_OUT) && !w->writing) {
      w->writing = true;
      w->sd.async_wait(asio::posix::descriptor_base::wait_write,
                       [this, fd, weak = std::weak_ptr<Watch>(w),
                        life = weak_from_this()](boost::system::error_code ec) {
                         on_ready(life, weak, fd, ec, CURL_CSELECT_OUT, CURL_POLL_OUT);
                       });
    }
  }

  void on_ready(const std::weak_ptr<Impl>& life, const std::weak_ptr<Watch>& weak, curl_socket_t fd,
                boost::system::error_code ec, int select, int poll_bit) {
    auto me = life.lock();
    if (!me) return;
    if (auto w = weak.lock()) {
      (poll_bit == CURL_POLL_IN ? w->reading : w->writing) = false;
      if (ec || !(w->what & poll_bit)) return;
    } else {
      return;
    }
    int running = 0;
    curl_multi_socket_action(multi, fd, select, &running);
    collect();
    // curl may have removed (or replaced) the watch while we were inside it.
    auto it = watches.find(fd);
    if (it != watches.end() && it->second == weak.lock()) arm(fd, it->second);
  }

  static int on_debug(CURL*, curl_infotype type, char* data, size_t size, void* userp) {
    if (type != CURLINFO_TEXT) return 0;
    auto* t = static_cast<Transfer*>(userp);
    const std::string_view line(data, size);
    if (line.find("(IN), TLS handshake, Request CERT") != std::string_view::npos)
      t->cert_requested = true;
    constexpr std::string_view kAlert = "(IN), TLS alert, ";
    if (auto at = line.find(kAlert); at != std::string_view::npos && t->tls_alert.empty()) {
      std::string_view a = line.substr(at + kAlert.size());
      a = a.substr(0, a.find(" ("));  // "bad certificate (554):" -> "bad certificate"
      t->tls_alert = std::string(a);
    }
    return 0;
  }

  static void apply_tls(CURL* e, const TlsSettings& tls) {
    if (!tls.ca_file.empty()) {
      curl_easy_setopt(e, CURLOPT_CAINFO, tls.ca_file.c_str());
      // That bundle only, as etcdctl --cacert and patronictl trust it: not also the system
      // directory Debian's libcurl adds by default. Without that directory libcurl also
      // keeps the parsed bundle instead of reading the file on the loop for every request;
      // a minute bounds how long a replaced CA file goes unnoticed.
      curl_easy_setopt(e, CURLOPT_CAPATH, nullptr);
      curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, 60L);
    }
    if (!tls.cert_file.empty()) {
      curl_easy_setopt(e, CURLOPT_SSLCERT, tls.cert_file.c_str());
      curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (!tls.key_file.empty()) {
      curl_easy_setopt(e, CURLOPT_SSLKEY, tls.key_file.c_str());
      curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, tls.verify_peer ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, tls.verify_peer && tls.verify_host ? 2L : 0L);
  }

  std::uint64_t start(HttpRequest req, Handler handler) {
    auto t = std::make_unique<Transfer>();
    t->id = next_id++;
    t->req = std::move(req);
    t->handler = std::move(handler);
    t->started = Clock::now();
    CURL* e = curl_easy_init();
    t->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, t->req.url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error_buf);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(t->req.timeout.count()));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(t->req.timeout.count()));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Impl::on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_USERAGENT, "fener/" FENER_VERSION);
    // Peers are on the cluster's own network; never go through an environment proxy.
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    if (!t->req.username.empty()) {
      curl_easy_setopt(e, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
      curl_easy_setopt(e, CURLOPT_USERNAME, t->req.username.c_str());
      curl_easy_setopt(e, CURLOPT_PASSWORD, t->req.password.c_str());
    }
    apply_tls(e, t->req.tls);
    if (t->req.url.rfind("https://", 0) == 0) {
      // The TLS trace only: certificate requests and alerts (see Transfer).
      curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, &Impl::on_debug);
      curl_easy_setopt(e, CURLOPT_DEBUGDATA, t.get());
      curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
    }
    for (const auto& h : t->req.headers) t->headers = curl_slist_append(t->headers, h.c_str());
    if (t->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    if (t->req.method == "GET") {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (t->req.method == "HEAD") {
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->req.method.c_str());
    }
    if (!t->req.body.empty() || t->req.method == "POST" || t->req.method == "PUT") {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(t->req.body.size()));
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->req.body.c_str());
    }
    const auto id = t->id;
    transfers.emplace(id, std::move(t));
    curl_multi_add_handle(multi, e);  // arms the timer; work starts from the loop
    return id;
  }

  // Aborts a transfer the caller no longer waits for.
  void abort(std::uint64_t id) {
    auto it = transfers.find(id);
    if (it == transfers.end()) return;
    auto t = std::move(it->second);
    transfers.erase(it);
    curl_multi_remove_handle(multi, t->easy);
    t->result.error = HttpError::cancelled;
    t->result.error_text = "cancelled";
    finish(std::move(t));
  }

  void collect() {
    CURLMsg* msg;
    int left = 0;
    while ((msg = curl_multi_info_read(multi, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* e = msg->easy_handle;
      const CURLcode code = msg->data.result;
      Transfer* raw = nullptr;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, &raw);
      auto it = raw ? transfers.find(raw->id) : transfers.end();
      if (it == transfers.end()) continue;
      auto t = std::move(it->second);
      transfers.erase(it);
      curl_multi_remove_handle(multi, e);
      classify(*t, code);
      finish(std::move(t));
    }
  }

  // What to judge a failed https transfer by: the server's alert when it sent one, its
  // dropping the connection right after asking for our certificate, else curl's words.
  static std::string tls_evidence(const Transfer& t, CURLcode code) {
    const bool dropped = code == CURLE_SEND_ERROR || code == CURLE_RECV_ERROR ||
                         code == CURLE_GOT_NOTHING || code == CURLE_SSL_CONNECT_ERROR;
    if (dropped && !t.tls_alert.empty()) return "the server sent TLS alert \"" + t.tls_alert + "\"";
    if (dropped && t.cert_requested && t.result.error_text.find("alert") == std::string::npos)
      return "the server closed the connection after the handshake, having asked for a client "
             "certificate";
    return t.result.error_text;
  }

  static void classify(Transfer& t, CURLcode code) {
    HttpResult& r = t.result;
    if (code == CURLE_OK) {
      curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &r.status);
      return;
    }
    r.body.clear();
    r.headers.clear();
    r.error_text = t.error_buf[0] ? t.error_buf : curl_easy_strerror(code);
    if (t.body_too_large) {
      r.error = HttpError::too_large;
      r.error_text = "response body larger than " + std::to_string(t.req.max_body) + " bytes";
    } else if (t.headers_too_large) {
      r.error = HttpError::too_large;
      r.error_text = "response headers larger than " + std::to_string(kMaxHeaderBytes) + " bytes";
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      r.error = HttpError::timeout;
    } else if (code == CURLE_COULDNT_CONNECT) {
      long os_errno = 0;
      curl_easy_getinfo(t.easy, CURLINFO_OS_ERRNO, &os_errno);
      r.error = os_errno == ECONNREFUSED ? HttpError::refused : HttpError::other;
    } else if (code == CURLE_COULDNT_RESOLVE_HOST) {
      r.error = HttpError::resolve;
    } else if (auto msg = t.req.url.rfind("https://", 0) == 0
                              ? tls_failure_message(code, tls_evidence(t, code), t.req.tls)
                              : std::nullopt) {
      r.error = HttpError::tls;
      r.error_text = std::move(*msg);
    } else {
      r.error = HttpError::other;
    }
  }

  void finish(std::unique_ptr<Transfer> t) {
    t->result.elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t->started);
    // Complete outside of curl's callbacks and in the caller's executor.
    auto handler = std::move(t->handler);
    auto result = std::move(t->result);
    t.reset();
    asio::post(io, [h = std::move(handler), r = std::move(result)]() mutable {
      h->complete(std::move(r));
    });
  }
};

HttpClient::HttpClient(asio::io_context& io) : impl_(std::make_shared<Impl>(io)) {}
HttpClient::~HttpClient() = default;

std::size_t HttpClient::in_flight() const {
  return impl_->transfers.size();
}

asio::awaitable<HttpResult> HttpClient::fetch(HttpRequest req) {
  auto impl = impl_;
  // A named initiation, not a lambda inside the co_await: GCC 12 mishandles the latter.
  auto init = [impl](auto handler, HttpRequest r) {
    auto slot = asio::get_associated_cancellation_slot(handler);
    Handler h = std::make_unique<CompletionFor<decltype(handler)>>(std::move(handler));
    const auto id = impl->start(std::move(r), std::move(h));
    if (slot.is_connected()) {
      slot.assign([weak = std::weak_ptr<Impl>(impl), id](asio::cancellation_type) {
        if (auto me = weak.lock()) me->abort(id);
      });
    }
  };
  co_return co_await asio::async_initiate<const decltype(asio::use_awaitable)&, void(HttpResult)>(
      std::move(init), asio::use_awaitable, std::move(req));
}

std::optional<std::string> HttpResult::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < n.size() && same; ++i)
      same = n[i] == static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
    if (same) return v;
  }
  return std::nullopt;
}

std::string_view to_string(HttpError e) {
  switch (e) {
    case HttpError::none:
      return "none";
    case HttpError::refused:
      return "refused";
    case HttpError::timeout:
      return "timeout";
    case HttpError::too_large:
      return "too_large";
    case HttpError::resolve:
      return "resolve";
    case HttpError::cancelled:
      return "cancelled";
    case HttpError::tls:
      return "tls";
    case HttpError::other:
      return "error";
  }
  return "error";
}

namespace {

// Case-insensitive: OpenSSL's error strings say "unknown ca", its alert names "unknown CA".
bool contains(const std::string& haystack, std::string_view needle) {
  auto lower = [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                     [&](char a, char b) { return lower(a) == lower(b); }) != haystack.end();
}

// " (CA /etc/x/ca.pem)", or " (system CA store)" when none is configured.
std::string ca_words(const TlsSettings& tls) {
  return tls.ca_file.empty() ? " (system CA store; no CA file configured)"
                             : " (CA " + tls.ca_file + ")";
}

std::string cert_words(const TlsSettings& tls) {
  return tls.cert_file.empty() ? "" : " (certificate " + tls.cert_file + ")";
}

// The part of curl's text worth showing: after "SSL certificate problem: " or OpenSSL's
// "error:0A000086:SSL routines::" prefix.
std::string curl_detail(const std::string& text) {
  std::string d = text;
  if (auto at = d.find("SSL certificate problem: "); at != std::string::npos) d = d.substr(at + 25);
  if (auto at = d.find("routines::"); at != std::string::npos) d = d.substr(at + 10);
  if (auto at = d.find(", errno"); at != std::string::npos) d.resize(at);
  return d;
}

}  // namespace

std::optional<std::string> tls_failure_message(int curl_code, const std::string& curl_text,
                                               const TlsSettings& tls) {
  const auto code = static_cast<CURLcode>(curl_code);
  const std::string detail = curl_detail(curl_text);
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      if (contains(curl_text, "expired"))
        return "TLS: server certificate expired" + ca_words(tls) + ": " + detail;
      if (contains(curl_text, "not yet valid"))
        return "TLS: server certificate not yet valid" + ca_words(tls) + ": " + detail;
      if (contains(curl_text, "subject name") || contains(curl_text, "host name") ||
          contains(curl_text, "does not match"))
        return "TLS: server certificate does not name the host asked for: " + detail;
      return "TLS: server certificate not trusted" + ca_words(tls) + ": " + detail;
    case CURLE_SSL_CACERT_BADFILE:
      return "TLS: cannot use the CA file" +
             (tls.ca_file.empty() ? std::string() : " " + tls.ca_file) + ": " + detail;
    case CURLE_SSL_CERTPROBLEM:
      return "TLS: cannot use the client certificate or key" + cert_words(tls) +
             (tls.key_file.empty() ? "" : " (key " + tls.key_file + ")") + ": " + detail;
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
      return "TLS: " + detail;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
      break;
    default:
      return std::nullopt;
  }
  // The handshake failed, or (TLS 1.3) the server's alert about our certificate came with
  // the first read. OpenSSL names the alert the server sent.
  const bool alert = contains(curl_text, "alert");
  // Without a certificate of ours, any alert about certificates means the server wanted one.
  const bool about_certs = contains(curl_text, "certificate") ||
                           contains(curl_text, "unknown ca") ||
                           contains(curl_text, "handshake failure");
  if (contains(curl_text, "certificate required") ||
      (alert && tls.cert_file.empty() && about_certs))
    return std::string("TLS: the server requires a client certificate") +
           (tls.cert_file.empty() ? " and none is configured" : "") + ": " + detail;
  if (contains(curl_text, "closed the connection after the handshake"))
    return tls.cert_file.empty()
               ? "TLS: the server requires a client certificate and none is configured: " + detail
               : "TLS: client certificate rejected by the server" + cert_words(tls) + ": " +
                     detail + " (expired, or not signed by a CA it trusts?)";
  if (alert && contains(curl_text, "certificate expired"))
    return "TLS: client certificate rejected by the server: expired" + cert_words(tls) + ": " +
           detail;
  if (alert && (contains(curl_text, "unknown ca") || contains(curl_text, "bad certificate") ||
                contains(curl_text, "certificate unknown") ||
                contains(curl_text, "unsupported certificate") ||
                contains(curl_text, "certificate revoked") || contains(curl_text, "access denied")))
    return "TLS: client certificate rejected by the server" + cert_words(tls) + ": " + detail;
  if (contains(curl_text, "wrong version number") || contains(curl_text, "packet length too long"))
    return "TLS: the server does not speak TLS there (an http:// endpoint?): " + detail;
  if (code == CURLE_SSL_CONNECT_ERROR || alert) return "TLS: handshake failed: " + detail;
  return std::nullopt;  // a plain receive/send error on an established connection
}

std::string HttpResult::describe() const {
  switch (error) {
    case HttpError::none:
      return "HTTP " + std::to_string(status);
    case HttpError::refused:
      return "connection refused";
    case HttpError::timeout:
      return "no answer within " + std::to_string(elapsed.count()) + " ms";
    case HttpError::too_large:
      return error_text;
    case HttpError::resolve:
      return "name did not resolve (" + error_text + ")";
    case HttpError::cancelled:
      return "cancelled at the deadline";
    case HttpError::tls:
      return error_text;
    case HttpError::other:
      return error_text;
  }
  return error_text;
}

asio::awaitable<std::vector<HttpResult>> fetch_all(HttpClient& http,
                                                   std::vector<HttpRequest> reqs) {
  auto ex = co_await asio::this_coro::executor;
  using Op = decltype(asio::co_spawn(ex, http.fetch(HttpRequest{}), asio::deferred));
  std::vector<Op> ops;
  ops.reserve(reqs.size());
  for (auto& r : reqs) ops.push_back(asio::co_spawn(ex, http.fetch(std::move(r)), asio::deferred));
  std::vector<HttpResult> out(ops.size());
  if (ops.empty()) co_return out;
  auto [order, errors, results] =
      co_await asio::experimental::make_parallel_group(std::move(ops))
          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (errors[i]) {
      out[i].error = HttpError::other;
      out[i].error_text = "internal error";
    } else {
      out[i] = std::move(results[i]);
    }
  }
  co_return out;
}

std::optional<nlohmann::json> parse_json(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

std::string snippet(const std::string& body, std::size_t n) {
  std::string out;
  // ASCII only: a cut multi-byte character would make the evidence invalid UTF-8.
  for (char c : body.substr(0, n)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? ' ' : u >= 0x80 ? '?' : c);
  }
  if (body.size() > n) out += "...";
  return out;
}

}  // namespace fener
