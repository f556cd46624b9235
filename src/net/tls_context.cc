#include "net/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/tls_context_impl.h"

namespace joule::net {

namespace {

std::string OpenSslError(const boost::system::error_code& ec) {
  std::string text = ec.message();
  unsigned long e = ERR_get_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    text += " (";
    text += buf;
    text += ")";
  }
  ERR_clear_error();
  return text;
}

}  // namespace

Result<std::shared_ptr<TlsContext>> LoadServerTlsContext(const std::string& cert_file,
                                                         const std::string& key_file) {
  namespace ssl = boost::asio::ssl;
  auto tls = std::make_shared<TlsContext>();
  boost::system::error_code ec;
  tls->ssl.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                       ec);
  if (ec) return Status::Internal("TLS options: " + OpenSslError(ec));
  SSL_CTX* ctx = tls->ssl.native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return Status::Internal("TLS: cannot require TLS 1.2");
  }
  // No renegotiation (TLS 1.2): a client-initiated one is a cheap way to burn server CPU.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  tls->ssl.use_certificate_chain_file(cert_file, ec);
  if (ec) {
    return Status::InvalidArgument("TLS certificate file '" + cert_file + "': " + OpenSslError(ec));
  }
  tls->ssl.use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) {
    return Status::InvalidArgument("TLS key file '" + key_file + "': " + OpenSslError(ec));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("TLS key file '" + key_file +
                                   "' does not match the certificate in '" + cert_file + "'");
  }
  return tls;
}

Result<std::shared_ptr<TlsContext>> LoadClientTlsContext(const std::string& ca_file,
                                                         const std::string& cert_file,
                                                         const std::string& key_file) {
  namespace ssl = boost::asio::ssl;
  if (cert_file.empty() != key_file.empty()) {
    return Status::InvalidArgument(
        "TLS client certificate and key: set both files or neither (certificate '" + cert_file +
        "', key '" + key_file + "')");
  }
  auto tls = std::make_shared<TlsContext>(ssl::context::tls_client);
  boost::system::error_code ec;
  tls->ssl.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1,
                       ec);
  if (ec) return Status::Internal("TLS options: " + OpenSslError(ec));
  SSL_CTX* ctx = tls->ssl.native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return Status::Internal("TLS: cannot require TLS 1.2");
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  if (ca_file.empty()) {
    tls->ssl.set_default_verify_paths(ec);
    if (ec) return Status::Internal("TLS: the system's CA certificates: " + OpenSslError(ec));
  } else {
    tls->ssl.load_verify_file(ca_file, ec);
    if (ec) {
      return Status::InvalidArgument("TLS CA file '" + ca_file + "': " + OpenSslError(ec));
    }
  }
  tls->ssl.set_verify_mode(ssl::verify_peer, ec);
  if (ec) return Status::Internal("TLS verify mode: " + OpenSslError(ec));
  if (!cert_file.empty()) {
    tls->ssl.use_certificate_chain_file(cert_file, ec);
    if (ec) {
      return Status::InvalidArgument("TLS client certificate file '" + cert_file +
                                     "': " + OpenSslError(ec));
    }
    tls->ssl.use_private_key_file(key_file, ssl::context::pem, ec);
    if (ec) {
      return Status::InvalidArgument("TLS client key file '" + key_file + "': " + OpenSslError(ec));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return Status::InvalidArgument("TLS client key file '" + key_file +
                                     "' does not match the certificate in '" + cert_file + "'");
    }
  }
  return tls;
}

}  // namespace joule::net
