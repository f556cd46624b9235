#include "common/url_password.h"

#include <gtest/gtest.h>

namespace joule {
namespace {

TEST(UrlPasswordTest, PasswordsAreRedacted) {
  EXPECT_EQ(RedactUrlPassword("postgresql://u:secretpw@h/db"), "postgresql://u:<set>@h/db");
  EXPECT_EQ(RedactUrlPassword("redis://:redispw@h:6379/0"), "redis://:<set>@h:6379/0");
  EXPECT_EQ(RedactUrlPassword("mqtt://user:pw2@h:1883"), "mqtt://user:<set>@h:1883");
  EXPECT_EQ(RedactUrlPassword("postgresql://u:p@ss@h/db"), "postgresql://u:<set>@h/db");
  EXPECT_EQ(RedactUrlPassword("postgresql://h/db?sslmode=require&password=x&user=u"),
            "postgresql://h/db?sslmode=require&password=<set>&user=u");
  EXPECT_EQ(RedactUrlPassword("host=h password=se\\ cret user=u"), "host=h password=<set> user=u");
  EXPECT_EQ(RedactUrlPassword("host=h password = 'a b\\'c' user=u"),
            "host=h password = <set> user=u");
  // libpq's sslpassword (the client key's passphrase) too, in both forms (found by a
  // black-box test: `joule config` printed it in clear).
  EXPECT_EQ(RedactUrlPassword("host=db user=joule password=pw sslpassword=KEYPASS dbname=joule"),
            "host=db user=joule password=<set> sslpassword=<set> dbname=joule");
  EXPECT_EQ(RedactUrlPassword("postgresql://joule:pw@db/joule?sslpassword=KEYPASS&sslmode=require"),
            "postgresql://joule:<set>@db/joule?sslpassword=<set>&sslmode=require");
  EXPECT_EQ(RedactUrlPassword("host=db sslpassword = 'a b' user=u"),
            "host=db sslpassword = <set> user=u");
  EXPECT_EQ(RedactUrlPasswordIn("bad key (sslpassword=KEYPASS; \"KEYPASS\")",
                                "host=db sslpassword=KEYPASS"),
            "bad key (sslpassword=<set>; \"<set>\")");
  // Redis takes redis://password@host (no ':'): that userinfo is the password.
  EXPECT_EQ(RedactUrlPassword("redis://hunter2@h:6379/0"), "redis://<set>@h:6379/0");
  EXPECT_EQ(RedactUrlPassword("rediss://hunter2@h"), "rediss://<set>@h");
  // An unterminated IPv6 host: the password is still found.
  EXPECT_EQ(RedactUrlPassword("postgres://joule:hunter2@[bad/joule"),
            "postgres://joule:<set>@[bad/joule");
  // Nothing to redact.
  for (const char* same :
       {"", "redis://127.0.0.1:6379/0", "postgresql://joule@h/db", "postgresql://u:@h/db",
        "host=h passwordless=1", "mqtt://h", "mqtt://user@h", "127.0.0.1:6379"}) {
    EXPECT_EQ(RedactUrlPassword(same), same);
  }
}

// A parser's or libpq's message quotes the URL, or a part of it: the password never stays.
TEST(UrlPasswordTest, PasswordsAreRedactedInsideAMessage) {
  const std::string url = "postgres://joule:hunter2@[bad/joule";
  EXPECT_EQ(RedactUrlPasswordIn("invalid URI: \"" + url + "\"", url),
            "invalid URI: \"postgres://joule:<set>@[bad/joule\"");
  EXPECT_EQ(RedactUrlPasswordIn("bad part \"joule:hunter2@[bad\"", url),
            "bad part \"joule:<set>@[bad\"");
  // As given and percent-decoded, as a quoted token (libpq: invalid percent-encoded token:
  // "…"), a userinfo or a password= value.
  const std::string encoded = "postgresql://u:p%40ss@h/db";
  EXPECT_EQ(RedactUrlPasswordIn("token \"p%40ss\", 'p@ss', u:p@ss@h, password=p@ss", encoded),
            "token \"<set>\", '<set>', u:<set>@h, password=<set>");
  EXPECT_EQ(RedactUrlPasswordIn("host=h: no route", "host=h password='a b' user=u"),
            "host=h: no route");
  EXPECT_EQ(RedactUrlPasswordIn("it was 'a b' or password = 'a b'", "host=h password='a b' user=u"),
            "it was '<set>' or password = <set>");
  EXPECT_EQ(
      RedactUrlPasswordIn("bad (sslpassword=KEYPASS&x)", "postgresql://h/db?sslpassword=KEYPASS"),
      "bad (sslpassword=<set>&x)");
  EXPECT_EQ(RedactUrlPasswordIn("redis url \"hunter2@h:99999\"", "redis://hunter2@h:99999/0"),
            "redis url \"<set>@h:99999\"");
  EXPECT_EQ(RedactUrlPasswordIn("nothing here", ""), "nothing here");
  EXPECT_EQ(RedactUrlPasswordIn("redis://h:1/0 refused", "redis://h:1/0"), "redis://h:1/0 refused");
}

// Only where the password stands as one: with the password "o" every "o" became "<set>"
// ("p<set>rt must be 1-65535", libpq's "c<set>nnecti<set>n t<set> server"), which garbled
// the message and told the password (found by a black-box test). A common word likewise.
TEST(UrlPasswordTest, AShortOrCommonWordPasswordLeavesTheRestOfTheMessageAlone) {
  EXPECT_EQ(RedactUrlPasswordIn("redis url \"redis://:o@127.0.0.1:99999/0\": port must be 1-65535",
                                "redis://:o@127.0.0.1:99999/0"),
            "redis url \"redis://:<set>@127.0.0.1:99999/0\": port must be 1-65535");
  EXPECT_EQ(RedactUrlPasswordIn("mqtt://u:h@h:1883 must be mqtt[s]://host[:port] (no user or "
                                "password in it: they have their own keys)",
                                "mqtt://u:h@h:1883"),
            "mqtt://u:<set>@h:1883 must be mqtt[s]://host[:port] (no user or password in it: "
            "they have their own keys)");
  const std::string libpq =
      "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the "
      "server running on that host and accepting TCP/IP connections?";
  for (const char* url :
       {"postgresql://joule:o@127.0.0.1:1/joule", "postgresql://joule:server@127.0.0.1:1/joule",
        "postgresql://joule:connection@127.0.0.1:1/joule", "host=127.0.0.1 port=1 password=server",
        "redis://server@127.0.0.1:1/0"}) {
    EXPECT_EQ(RedactUrlPasswordIn(libpq, url), libpq) << url;
  }
  // Where it does stand as a password, it is still redacted.
  EXPECT_EQ(RedactUrlPasswordIn("bad \"joule:server@[x\" and \"server\"",
                                "postgresql://joule:server@[x/joule"),
            "bad \"joule:<set>@[x\" and \"<set>\"");
  EXPECT_EQ(RedactUrlPasswordIn("host=h password=o user=u: no route", "host=h password=o user=u"),
            "host=h password=<set> user=u: no route");
}

}  // namespace
}  // namespace joule
