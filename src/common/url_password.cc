#include "common/url_password.h"

#include <algorithm>

namespace joule {
namespace {

// Replaces every occurrence of `what` (non-empty) in `*text` by `with`.
void ReplaceAll(std::string* text, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (size_t at = text->find(what); at != std::string::npos;
       at = text->find(what, at + with.size())) {
    text->replace(at, what.size(), with);
  }
}

int HexValue(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// %XX escapes decoded (a malformed one is kept as it is): what a URI parser makes of it.
std::string PercentDecoded(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      const int hi = HexValue(in[i + 1]);
      const int lo = HexValue(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += in[i];
  }
  return out;
}

// Whether `text` before `end` is "password=" or "sslpassword =" (libpq's key=value and a URI's
// query parameter; spaces around '=' as libpq allows).
bool FollowsPasswordKey(std::string_view text, size_t end) {
  std::string_view before = text.substr(0, end);
  while (!before.empty() && before.back() == ' ') before.remove_suffix(1);
  if (before.empty() || before.back() != '=') return false;
  before.remove_suffix(1);
  while (!before.empty() && before.back() == ' ') before.remove_suffix(1);
  return before.ends_with("password");
}

// Replaces `password` (non-empty) in `*text` by "<set>" where it stands as a password: a URL's
// userinfo (":password@", "//password@" for redis://password@host), the value of a
// password= or sslpassword= parameter, or a whole quoted token ("password" or 'password', as
// libpq quotes a value it cannot decode). Elsewhere its text is left alone: a short or
// common password is a part of other words.
void RedactPasswordWhereItStands(std::string* text, std::string_view password) {
  static constexpr std::string_view kValueEnd = " &#\"',;)\n";
  for (size_t at = text->find(password); at != std::string::npos;) {
    const size_t end = at + password.size();
    const char prev = at > 0 ? (*text)[at - 1] : '\0';
    const char next = end < text->size() ? (*text)[end] : '\0';
    const bool userinfo = next == '@' && (prev == ':' || prev == '/' || prev == '"' ||
                                          prev == '\'' || prev == ' ' || prev == '\0');
    const bool parameter = FollowsPasswordKey(*text, at) &&
                           (next == '\0' || kValueEnd.find(next) != std::string_view::npos);
    const bool quoted = (prev == '"' || prev == '\'') && next == prev;
    if (userinfo || parameter || quoted) {
      text->replace(at, password.size(), kRedactedSecret);
      at = text->find(password, at + kRedactedSecret.size());
    } else {
      at = text->find(password, at + 1);
    }
  }
}

}  // namespace

std::vector<std::pair<size_t, size_t>> UrlPasswordSpans(std::string_view url) {
  std::vector<std::pair<size_t, size_t>> spans;
  if (size_t scheme = url.find("://"); scheme != std::string_view::npos) {
    const size_t start = scheme + 3;
    const size_t end = std::min(url.find_first_of("/?#", start), url.size());
    const std::string_view authority = url.substr(start, end - start);
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
      const size_t colon = authority.substr(0, at).find(':');
      if (colon != std::string_view::npos) {
        if (at > colon + 1) spans.emplace_back(start + colon + 1, at - colon - 1);
      } else if (url.substr(0, scheme).starts_with("redis") && at > 0) {
        spans.emplace_back(start, at);  // redis://password@host (store/redis ParseRedisUrl)
      }
    }
  }
  // sslpassword: the client key's passphrase (printed in clear by `joule config` until
  // session 19; found by a black-box test).
  for (const std::string_view kParam :
       {std::string_view("password"), std::string_view("sslpassword")}) {
    for (size_t at = url.find(kParam); at != std::string_view::npos;
         at = url.find(kParam, at + kParam.size())) {
      if (at > 0 && url[at - 1] != '?' && url[at - 1] != '&' && url[at - 1] != ' ') continue;
      size_t begin = at + kParam.size();
      while (begin < url.size() && url[begin] == ' ') ++begin;  // libpq: "password = x"
      if (begin >= url.size() || url[begin] != '=') continue;
      ++begin;
      while (begin < url.size() && url[begin] == ' ') ++begin;
      size_t end;
      if (begin < url.size() && url[begin] == '\'') {  // libpq: 'quoted value', \' escapes
        end = begin + 1;
        while (end < url.size() && url[end] != '\'') end += url[end] == '\\' ? 2 : 1;
        end = std::min(end + 1, url.size());
      } else {
        end = begin;  // up to '&' (URI) or a space (key=value; \ escapes one)
        while (end < url.size() && url[end] != '&' && url[end] != ' ' && url[end] != '#') {
          end += url[end] == '\\' ? 2 : 1;
        }
        end = std::min(end, url.size());
      }
      if (end > begin) spans.emplace_back(begin, end - begin);
    }
  }
  std::sort(spans.begin(), spans.end());
  return spans;
}

std::string RedactUrlPassword(std::string_view url) {
  std::string out(url);
  auto spans = UrlPasswordSpans(url);
  for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
    out.replace(it->first, it->second, kRedactedSecret);
  }
  return out;
}

std::string RedactUrlPasswordIn(std::string_view text, std::string_view url) {
  std::string out(text);
  if (url.empty()) return out;
  ReplaceAll(&out, url, RedactUrlPassword(url));
  // Then the password where it still stands as a password: not every occurrence of its
  // text (with the password "o", "port" read "p<set>rt" and libpq's "connection to server"
  // "c<set>nnecti<set>n t<set> server", which garbled the message and told the password;
  // found by a black-box test).
  for (const auto& [pos, len] : UrlPasswordSpans(url)) {
    const std::string_view given = url.substr(pos, len);
    std::string_view unquoted = given;
    if (unquoted.size() >= 2 && unquoted.front() == '\'' && unquoted.back() == '\'') {
      unquoted = unquoted.substr(1, unquoted.size() - 2);  // libpq 'quoted value'
    }
    for (const std::string& password :
         {std::string(given), std::string(unquoted), PercentDecoded(given)}) {
      if (password.empty() || password == kRedactedSecret) continue;
      RedactPasswordWhereItStands(&out, password);
    }
  }
  return out;
}

}  // namespace joule
