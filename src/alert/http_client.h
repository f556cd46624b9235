// A minimal blocking HTTP/1.1 client for webhook POSTs (http and https via OpenSSL).
// One request per connection ("Connection: close"); the whole exchange is bounded by
// `timeout_ns`. The host is resolved once, every resolved address is checked by the
// SSRF guard (unless private targets are allowed) and the connection goes to exactly
// the checked address. https verifies the server's certificate chain and host name (IP
// literals against IP SANs) against the system trust store plus, when `ca_file` is set
// (alerts.webhook_ca_file), the PEM certificates in that file. Thread-safe: each call is
// independent (TLS contexts are shared, one per ca_file).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace joule::alert {

struct HttpPostResult {
  int status = 0;  // HTTP status; 0 when no response
  std::string body;
};

// Fails with PermissionDenied for a refused target, Unavailable for network errors and
// timeouts.
Result<HttpPostResult> HttpPost(const std::string& url,
                                const std::vector<std::pair<std::string, std::string>>& headers,
                                const std::string& body, int64_t timeout_ns,
                                bool allow_private_targets, const std::string& ca_file = "");

// Ok when `ca_file` is empty or holds at least one PEM certificate OpenSSL can load
// (checked at start so a wrong path fails loudly instead of at every delivery).
Status CheckWebhookCaFile(const std::string& ca_file);

}  // namespace joule::alert
