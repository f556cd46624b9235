#include "net/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fstream>
#include <string>

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

// Keys are unencrypted PEM (docs/SECURITY.md). Without a password callback, OpenSSL asks
// for an encrypted key's pass phrase on the terminal ("Enter PEM pass phrase:"), so a
// `joule serve` started from one waited there (found by a black-box test); this callback
// has no password, so such a key fails to load at once with an error naming the file.
void RefuseEncryptedKeys(boost::asio::ssl::context& ssl) {
  boost::system::error_code ignored;
  ssl.set_password_callback(
      [](std::size_t, boost::asio::ssl::context::password_purpose) { return std::string(); },
      ignored);
}

constexpr const char* kEncryptedKeyHint =
    " (an encrypted key is not supported: decrypt it, e.g. `openssl pkey -in KEY -out "
    "PLAIN.pem`, and protect the file with chmod 600)";

// The load error for `key_file`, with the hint when it is an encrypted key.
std::string KeyFileError(const boost::system::error_code& ec, const std::string& key_file) {
  std::string error = OpenSslError(ec);
  std::ifstream in(key_file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("-----BEGIN ENCRYPTED", 0) == 0 ||
        line.rfind("Proc-Type: 4,ENCRYPTED", 0) == 0) {
      return error + kEncryptedKeyHint;
    }
  }
  return error;
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
  RefuseEncryptedKeys(tls->ssl);
  tls->ssl.use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) {
    return Status::InvalidArgument("TLS key file '" + key_file +
                                   "': " + KeyFileError(ec, key_file));
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
    RefuseEncryptedKeys(tls->ssl);
    tls->ssl.use_private_key_file(key_file, ssl::context::pem, ec);
    if (ec) {
      return Status::InvalidArgument("TLS client key file '" + key_file +
                                     "': " + KeyFileError(ec, key_file));
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
