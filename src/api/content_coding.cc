#include "api/content_coding.h"

#include <fmt/format.h>

#include <string>

namespace joule::api {
namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] | 0x20) : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

}  // namespace

std::optional<std::string_view> UnsupportedContentCoding(const net::HttpRequest& req) {
  for (const auto& [name, value] : req.headers) {
    if (name != "content-encoding") continue;
    std::string_view rest(value);
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      std::string_view coding = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) {
        coding.remove_prefix(1);
      }
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) {
        coding.remove_suffix(1);
      }
      if (!coding.empty() && !EqualsIgnoreCase(coding, "identity")) return coding;
    }
  }
  return std::nullopt;
}

net::HttpResponse ContentCodingRefusal(std::string_view coding) {
  bool plain = !coding.empty() && coding.size() <= 32;
  for (const char c : coding) plain &= c > ' ' && c < 0x7F && c != '"' && c != '\\';
  net::HttpResponse r = net::HttpResponse::Error(
      415, "unsupported_media_type",
      fmt::format("{} is not supported: send the body uncompressed (Content-Encoding "
                  "identity, or none)",
                  plain ? fmt::format("Content-Encoding '{}'", coding)
                        : std::string("this Content-Encoding")));
  r.headers.emplace_back("Accept-Encoding", "identity");
  return r;
}

std::optional<net::HttpResponse> RefuseContentCoding(const net::HttpRequest& req) {
  if (auto coding = UnsupportedContentCoding(req)) return ContentCodingRefusal(*coding);
  return std::nullopt;
}

}  // namespace joule::api
