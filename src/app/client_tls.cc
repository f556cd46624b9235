#include "app/client_tls.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <ctime>

namespace joule::app {
namespace {

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  char message[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, message, sizeof message);
  ERR_clear_error();
  return message;
}

// SIGPIPE blocked on this thread for the scope; one raised meanwhile is consumed.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

// The first certificate in a PEM file, or null.
X509* ReadFirstCertificate(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return cert;
}

}  // namespace

struct ClientTls::Handles {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  ~Handles() {
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
};

ClientTls::ClientTls(std::unique_ptr<Handles> handles) : handles_(std::move(handles)) {}

ClientTls::~ClientTls() = default;

Result<std::unique_ptr<ClientTls>> ClientTls::Connect(int fd, const std::string& host,
                                                      const ClientTlsTrust& trust) {
  auto h = std::make_unique<Handles>();
  h->ctx = SSL_CTX_new(TLS_client_method());
  if (h->ctx == nullptr) return Status::Internal("SSL_CTX_new: " + OpenSslError());
  SSL_CTX_set_min_proto_version(h->ctx, TLS1_2_VERSION);
  SSL_CTX_set_default_verify_paths(h->ctx);
  if (!trust.ca_file.empty() &&
      SSL_CTX_load_verify_locations(h->ctx, trust.ca_file.c_str(), nullptr) != 1) {
    return Status::InvalidArgument(
        fmt::format("{}: cannot load PEM certificates: {}", trust.ca_file, OpenSslError()));
  }
  X509* pinned = nullptr;
  if (!trust.pinned_cert_file.empty()) {
    pinned = ReadFirstCertificate(trust.pinned_cert_file);
    if (pinned == nullptr) {
      return Status::InvalidArgument(fmt::format("{}: cannot read a PEM certificate: {}",
                                                 trust.pinned_cert_file, OpenSslError()));
    }
  }
  std::unique_ptr<X509, decltype(&X509_free)> pinned_owner(pinned, X509_free);
  // The handshake does not stop at an untrusted peer: its verification result, host name
  // included, is read below, where the pinned certificate may accept it instead.
  SSL_CTX_set_verify(h->ctx, SSL_VERIFY_NONE, nullptr);
  h->ssl = SSL_new(h->ctx);
  if (h->ssl == nullptr || SSL_set_fd(h->ssl, fd) != 1) {
    return Status::Internal("SSL_new: " + OpenSslError());
  }
  // An IP literal is checked against the certificate's IP SANs (set1_ip_asc takes nothing
  // else); a name against its DNS names, and sent as SNI.
  if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(h->ssl), host.c_str()) != 1) {
    ERR_clear_error();
    SSL_set_hostflags(h->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set_tlsext_host_name(h->ssl, host.c_str()) != 1 ||
        SSL_set1_host(h->ssl, host.c_str()) != 1) {
      return Status::Internal("TLS: cannot set the host name to verify");
    }
  }
  {
    SigpipeBlocked blocked;
    if (SSL_connect(h->ssl) != 1) {
      return Status::Unavailable("TLS handshake failed: " + OpenSslError());
    }
  }
  std::unique_ptr<X509, decltype(&X509_free)> peer(SSL_get1_peer_certificate(h->ssl), X509_free);
  if (peer == nullptr) return Status::Unavailable("TLS: the server sent no certificate");
  const bool is_pinned = pinned != nullptr && X509_cmp(peer.get(), pinned) == 0;
  const long verified = SSL_get_verify_result(h->ssl);
  if (!is_pinned && verified != X509_V_OK) {
    return Status::Unavailable(fmt::format(
        "TLS: the server's certificate is not trusted ({}){}",
        X509_verify_cert_error_string(verified),
        pinned != nullptr ? fmt::format(", nor is it the one in {}", trust.pinned_cert_file) : ""));
  }
  return std::unique_ptr<ClientTls>(new ClientTls(std::move(h)));
}

bool ClientTls::Send(std::string_view bytes, std::string* error) {
  SigpipeBlocked blocked;
  size_t off = 0;
  while (off < bytes.size()) {
    const int n =
        SSL_write(handles_->ssl, bytes.data() + off, static_cast<int>(bytes.size() - off));
    if (n <= 0) {
      *error = "TLS write failed: " + OpenSslError();
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

long ClientTls::TryReceive(char* buffer, size_t size) {
  const int fd = SSL_get_fd(handles_->ssl);
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return 0;
  const int n = SSL_read(handles_->ssl, buffer, static_cast<int>(size));
  const int why = n > 0 ? SSL_ERROR_NONE : SSL_get_error(handles_->ssl, n);
  fcntl(fd, F_SETFL, flags);
  if (n > 0) return n;
  ERR_clear_error();
  return why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE ? -1 : 0;
}

size_t ClientTls::Receive(char* buffer, size_t size) {
  const int n = SSL_read(handles_->ssl, buffer, static_cast<int>(size));
  if (n <= 0) {
    ERR_clear_error();
    return 0;
  }
  return static_cast<size_t>(n);
}

}  // namespace joule::app
