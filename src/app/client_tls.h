// ClientTls: the client side of one TLS 1.2+ session over a connected blocking socket, for
// the CLI's HttpClient (`joule replay` asking a server whose HTTP listener has TLS on,
// docs/SECURITY.md). Not thread-safe; one per connection. SIGPIPE is blocked on the calling
// thread while OpenSSL writes (it uses write(), not send(MSG_NOSIGNAL)).
//
// Trust: the peer is accepted when its certificate chain verifies against the system's CAs
// plus `ca_file`, with the host name (or IP address) checked against its subjectAltName —
// or when its certificate is exactly the first one in `pinned_cert_file` (the server's own
// `server.tls_cert_file`, read by a CLI on the server's machine: nothing to verify against
// a CA or a name, and a self-signed certificate for "localhost" works at 127.0.0.1).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace joule::app {

struct ClientTlsTrust {
  std::string ca_file;           // PEM CAs trusted besides the system's ("" = system only)
  std::string pinned_cert_file;  // PEM; its first certificate is accepted as is ("" = none)
};

class ClientTls {
 public:
  // Runs the handshake on `fd` (which stays the caller's to close) and checks the peer as
  // the header says before anything is sent. Unavailable names the reason (handshake
  // failed, certificate not trusted and why); InvalidArgument an unreadable trust file.
  static Result<std::unique_ptr<ClientTls>> Connect(int fd, const std::string& host,
                                                    const ClientTlsTrust& trust);
  ~ClientTls();
  ClientTls(const ClientTls&) = delete;
  ClientTls& operator=(const ClientTls&) = delete;

  // Sends all of `bytes`; false with *error set when the peer closed or failed.
  bool Send(std::string_view bytes, std::string* error);
  // Up to `size` bytes into `buffer`; 0 at the peer's close or on an error.
  size_t Receive(char* buffer, size_t size);
  // As Receive, without waiting: -1 when no application data is there yet (e.g. only a
  // TLS 1.3 session ticket arrived, or nothing), 0 at the peer's close or on an error.
  long TryReceive(char* buffer, size_t size);

 private:
  struct Handles;
  explicit ClientTls(std::unique_ptr<Handles> handles);
  std::unique_ptr<Handles> handles_;
};

}  // namespace joule::app
