#include "alert/target_guard.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace joule::alert {
namespace {

bool NonPublicV4(uint32_t a) {  // host byte order
  auto in = [a](uint32_t net, int bits) {
    uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    return (a & mask) == net;
  };
  return in(0x00000000, 8) ||   // 0.0.0.0/8 "this network"
         in(0x0A000000, 8) ||   // 10/8
         in(0x64400000, 10) ||  // 100.64/10 carrier-grade NAT
         in(0x7F000000, 8) ||   // loopback
         in(0xA9FE0000, 16) ||  // link-local (cloud metadata lives here)
         in(0xAC100000, 12) ||  // 172.16/12
         in(0xC0000000, 24) ||  // 192.0.0/24 protocol assignments
         in(0xC0A80000, 16) ||  // 192.168/16
         in(0xC6120000, 15) ||  // 198.18/15 benchmarking
         in(0xE0000000, 4) ||   // multicast
         in(0xF0000000, 4);     // reserved, broadcast
}

}  // namespace

bool IsNonPublicAddress(const sockaddr* addr) {
  if (addr->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(addr);
    return NonPublicV4(ntohl(v4->sin_addr.s_addr));
  }
  if (addr->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(addr);
    const uint8_t* b = v6->sin6_addr.s6_addr;
    static const uint8_t kZero[16] = {};
    if (std::memcmp(b, kZero, 15) == 0 && (b[15] == 0 || b[15] == 1)) return true;  // :: and ::1
    // IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96 and the deprecated IPv4-compatible
    // ::a.b.c.d (::/96; found by a black-box test: ::127.0.0.1 passed as a public
    // address): judge the embedded IPv4.
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t kNat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765; found by a black-box test).
    static const uint8_t kTranslated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
    auto v4_at = [b](int i) {
      return (uint32_t{b[i]} << 24) | (uint32_t{b[i + 1]} << 16) | (uint32_t{b[i + 2]} << 8) |
             b[i + 3];
    };
    if (std::memcmp(b, kMapped, 12) == 0 || std::memcmp(b, kNat64, 12) == 0 ||
        std::memcmp(b, kTranslated, 12) == 0 || std::memcmp(b, kZero, 12) == 0) {
      return NonPublicV4(v4_at(12));
    }
    // 6to4 2002:a.b.c.d::/48 reaches the embedded IPv4 through a relay: judged by it (found
    // by a black-box test: 2002:7f00:1:: was tried).
    if (b[0] == 0x20 && b[1] == 0x02) return NonPublicV4(v4_at(2));
    // The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) translates into a local network.
    if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1) {
      return true;
    }
    if ((b[0] & 0xfe) == 0xfc) return true;                  // fc00::/7 unique local
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return true;  // fe80::/10 link-local
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return true;  // fec0::/10 site-local
    if (b[0] == 0xff) return true;                           // multicast
    return false;
  }
  return true;  // anything else is not a web target
}

Result<WebhookUrl> ParseWebhookUrl(std::string_view url) {
  WebhookUrl out;
  std::string lower(url.substr(0, 8));
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view rest;
  if (lower.rfind("https://", 0) == 0) {
    out.tls = true;
    rest = url.substr(8);
  } else if (lower.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return Status::InvalidArgument("channel url must start with http:// or https://");
  }
  if (url.size() > 2048) return Status::InvalidArgument("channel url is longer than 2048 bytes");
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Status::InvalidArgument("channel url must not contain spaces or control characters");
    }
  }
  size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (size_t hash = out.target.find('#'); hash != std::string::npos) out.target.resize(hash);
  if (out.target.empty() || out.target[0] != '/') out.target = "/" + out.target;
  if (authority.find('@') != std::string_view::npos) {
    return Status::InvalidArgument("channel url must not contain credentials (user@)");
  }
  std::string_view port_text;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos)
      return Status::InvalidArgument("channel url: bad IPv6 host");
    out.host = std::string(authority.substr(1, close - 1));
    // A zone id ("[fe80::1%25eth0]", RFC 6874) names an interface of this host: never a
    // web target (found by a black-box test: [::1%251] passed the creation check, which
    // did not read it as an address).
    if (out.host.find('%') != std::string::npos) {
      return Status::InvalidArgument(
          "channel url: an IPv6 address with a zone id (%) is not a web target");
    }
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Status::InvalidArgument("channel url: bad host");
      port_text = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (out.host.empty()) return Status::InvalidArgument("channel url has no host");
  out.port = out.tls ? 443 : 80;
  if (!port_text.empty()) {
    unsigned p = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || p > 65535) return Status::InvalidArgument("channel url: bad port");
      p = p * 10 + static_cast<unsigned>(c - '0');
    }
    if (p == 0 || p > 65535) return Status::InvalidArgument("channel url: bad port");
    out.port = static_cast<uint16_t>(p);
  }
  std::transform(out.host.begin(), out.host.end(), out.host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

Status CheckWebhookUrl(std::string_view url, bool allow_private_targets) {
  JOULE_ASSIGN_OR_RETURN(WebhookUrl u, ParseWebhookUrl(url));
  if (allow_private_targets) return Status::Ok();
  // A percent-encoded host ("%31%32%37.0.0.1") is no name a resolver takes as written, and
  // decoded it may be an address: refused (found by a black-box test: it passed).
  if (u.host.find('%') != std::string::npos) {
    return Status::InvalidArgument("channel url: a percent-encoded host is not accepted");
  }
  // The absolute form of a name ("localhost.") is the same name (found by a black-box test:
  // "localhost." and "metadata.google.internal." passed).
  std::string h = u.host;
  while (!h.empty() && h.back() == '.') h.pop_back();
  auto ends_with = [&h](std::string_view s) {
    return h.size() >= s.size() && h.compare(h.size() - s.size(), s.size(), s) == 0;
  };
  bool refused = h == "localhost" || ends_with(".localhost") || ends_with(".local") ||
                 ends_with(".internal") || ends_with(".localdomain") || h.empty();
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  if (inet_pton(AF_INET, h.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    refused = IsNonPublicAddress(reinterpret_cast<sockaddr*>(&v4));
  } else if (inet_pton(AF_INET6, h.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    refused = IsNonPublicAddress(reinterpret_cast<sockaddr*>(&v6));
  } else {
    // Numeric forms inet_pton rejects but resolvers accept ("127.1", "2130706433", hex).
    bool numeric = !h.empty() && std::all_of(h.begin(), h.end(), [](char c) {
      return std::isxdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'x';
    }) && std::isdigit(static_cast<unsigned char>(h[0]));
    if (numeric) refused = true;
  }
  if (refused) {
    return Status::InvalidArgument(fmt::format(
        "channel url host \"{}\" is a loopback, private or link-local address; such targets "
        "are refused unless alerts.allow_private_targets = true",
        h));
  }
  return Status::Ok();
}

}  // namespace joule::alert
