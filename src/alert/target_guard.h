// Webhook target checks (CONTRACT §4, the SSRF guard): a target URL must be http(s) with
// a host; loopback, private, link-local, unspecified, multicast and other non-public
// addresses are refused unless alerts.allow_private_targets. Checked twice: on the URL
// at rule creation (literal addresses and "localhost"), and on every resolved address
// at delivery, right before connecting to exactly that address (no second lookup, so
// DNS rebinding cannot slip a private address in). Thread-safe (pure functions).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace joule::alert {

struct WebhookUrl {
  bool tls = false;
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
  std::string target;  // path and query, "/" when empty
};

Result<WebhookUrl> ParseWebhookUrl(std::string_view url);

// True for addresses that are not public unicast.
bool IsNonPublicAddress(const sockaddr* addr);

// Creation-time check of a URL (no DNS).
Status CheckWebhookUrl(std::string_view url, bool allow_private_targets);

}  // namespace joule::alert
