// Standard Webhooks signing (CONTRACT §4): webhook-signature = "v1," + base64(HMAC-SHA256(
// key, "{webhook-id}.{webhook-timestamp}.{body}")), where the key is the channel secret as
// UTF-8 bytes or, for a "whsec_" secret, the base64-decoded remainder. Thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace joule::alert {

// The HMAC key bytes for a channel secret.
std::string WebhookKey(std::string_view secret);
// "v1,<base64>".
std::string SignWebhook(std::string_view secret, std::string_view id, std::string_view timestamp,
                        std::string_view body);
std::string Base64Encode(std::string_view bytes);
// Empty on malformed input.
std::string Base64Decode(std::string_view text);

}  // namespace joule::alert
