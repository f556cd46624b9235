#include "net/url.h"

#include <charconv>

namespace joule::net {

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out) {
  // Runs without '%' (or '+' when it means a space) are copied whole: a path or a query
  // value mostly is one such run.
  out->clear();
  size_t run = 0;  // start of the pending run of characters copied as they are
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c != '%' && (c != '+' || !plus_is_space)) continue;
    if (run == 0 && out->capacity() < in.size()) out->reserve(in.size());
    out->append(in.data() + run, i - run);
    if (c == '%') {
      if (in.size() - i < 3) return false;
      const int hi = HexValue(in[i + 1]);
      const int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out->push_back(' ');
    }
    run = i + 1;
  }
  out->append(in.data() + run, in.size() - run);
  return true;
}

bool OriginForm(std::string_view target, std::string* origin, std::string* authority) {
  if (!target.empty() && target.front() == '/') {
    origin->assign(target);
    return true;
  }
  // absolute-form = absolute-URI; only the http and https schemes name an origin server.
  size_t scheme = 0;
  for (std::string_view s : {"http://", "https://"}) {
    if (target.size() < s.size()) continue;
    bool same = true;
    for (size_t i = 0; i < s.size() && same; ++i) {
      char c = target[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      same = c == s[i];
    }
    if (same) scheme = s.size();
  }
  if (scheme == 0) return false;
  std::string_view rest = target.substr(scheme);
  const size_t end = rest.find_first_of("/?#");
  std::string_view host = rest.substr(0, end);
  if (host.empty() || host.find('@') != std::string_view::npos) return false;  // no userinfo
  if (authority != nullptr) authority->assign(host);
  rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (!rest.empty() && rest.front() == '#') return false;
  origin->clear();
  if (rest.empty() || rest.front() != '/') origin->push_back('/');
  origin->append(rest);
  return true;
}

bool ParseQuery(std::string_view query, HttpHeaders* out) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key;
    std::string value;
    if (!PercentDecode(part.substr(0, eq), true, &key)) return false;
    if (eq != std::string_view::npos && !PercentDecode(part.substr(eq + 1), true, &value)) {
      return false;
    }
    out->emplace_back(std::move(key), std::move(value));
  }
  return true;
}

Result<HostPort> ParseHostPort(std::string_view host_port) {
  HostPort hp;
  std::string_view port_text;
  if (!host_port.empty() && host_port.front() == '[') {
    size_t close = host_port.find(']');
    if (close == std::string_view::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      return Status::InvalidArgument("bad listen address '" + std::string(host_port) +
                                     "': expected [ipv6]:port");
    }
    hp.host = std::string(host_port.substr(1, close - 1));
    port_text = host_port.substr(close + 2);
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::InvalidArgument("bad listen address '" + std::string(host_port) +
                                     "': expected host:port");
    }
    hp.host = std::string(host_port.substr(0, colon));
    port_text = host_port.substr(colon + 1);
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      port > 65535) {
    return Status::InvalidArgument("bad port in listen address '" + std::string(host_port) + "'");
  }
  hp.port = static_cast<uint16_t>(port);
  return hp;
}

}  // namespace joule::net
