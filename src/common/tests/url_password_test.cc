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
  EXPECT_EQ(RedactUrlPasswordIn("bad key (sslpassword KEYPASS)", "host=db sslpassword=KEYPASS"),
            "bad key (sslpassword <set>)");
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
  // As given and percent-decoded.
  const std::string encoded = "postgresql://u:p%40ss@h/db";
  EXPECT_EQ(RedactUrlPasswordIn("user u password p@ss; p%40ss", encoded),
            "user u password <set>; <set>");
  EXPECT_EQ(RedactUrlPasswordIn("host=h: no route", "host=h password='a b' user=u"),
            "host=h: no route");
  EXPECT_EQ(RedactUrlPasswordIn("it was 'a b' or a b", "host=h password='a b' user=u"),
            "it was '<set>' or <set>");
  EXPECT_EQ(RedactUrlPasswordIn("nothing here", ""), "nothing here");
  EXPECT_EQ(RedactUrlPasswordIn("redis://h:1/0 refused", "redis://h:1/0"), "redis://h:1/0 refused");
}

}  // namespace
}  // namespace joule
