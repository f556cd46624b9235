#include "app/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "log/log.h"

namespace joule::app {
namespace {

std::string WriteTemp(const std::string& text) {
  char path[] = "/tmp/joule-config-XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigTest, DefaultsWithoutFileMatchContract) {
  char* env[] = {nullptr};
  auto c = LoadConfig("", env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->http_listen, "127.0.0.1:8080");
  EXPECT_EQ(c->mqtt_listen, "127.0.0.1:1883");
  EXPECT_EQ(c->data_dir, "./data");
  EXPECT_EQ(c->durability, "fsync");
  EXPECT_EQ(c->window_ns, 60'000'000'000);
  EXPECT_EQ(c->out_of_orderness_ns, 10'000'000'000);
  EXPECT_EQ(c->allowed_lateness_ns, 3'600'000'000'000);
  EXPECT_EQ(c->idle_timeout_ns, 60'000'000'000);
  EXPECT_EQ(c->early_fire_interval_ns, 5'000'000'000);
  EXPECT_EQ(c->max_gap_ns, 300'000'000'000);
  EXPECT_EQ(c->auth_mode, "required");
  EXPECT_EQ(c->metadata_backend, "sqlite");
  EXPECT_EQ(c->latest_backend, "memory");
  EXPECT_EQ(c->max_body_bytes, 4u << 20);
  EXPECT_EQ(c->max_events_per_request, 10000u);
  EXPECT_EQ(c->max_future_skew_ns, 300'000'000'000);
  EXPECT_EQ(c->max_event_age_ns, 7 * 86'400'000'000'000);
}

TEST(ConfigTest, FileThenEnvironmentWins) {
  std::string path = WriteTemp(R"(
[server]
http_listen = "127.0.0.1:9000"
[stream]
out_of_orderness = "30s"
[limits]
max_body_bytes = "64KiB"
[metrics.kinds]
solar_w = "power"
grid_import = "counter"
)");
  std::string v1 = "JOULE_SERVER_HTTP_LISTEN=127.0.0.1:0";
  std::string v2 = "JOULE_STREAM_MAX_GAP=2m";
  char* env[] = {v1.data(), v2.data(), nullptr};
  auto c = LoadConfig(path, env);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->http_listen, "127.0.0.1:0");
  EXPECT_EQ(c->out_of_orderness_ns, 30'000'000'000);
  EXPECT_EQ(c->max_gap_ns, 120'000'000'000);
  EXPECT_EQ(c->max_body_bytes, 64u << 10);
  EXPECT_EQ(c->metric_kinds.at("solar_w"), model::MetricKind::kPower);
  EXPECT_EQ(c->metric_kinds.at("grid_import"), model::MetricKind::kCounter);
  std::remove(path.c_str());
}

TEST(ConfigTest, ADirectoryIsNotAConfigFile) {
  auto c = LoadConfig("/tmp", nullptr);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("is a directory"), std::string::npos)
      << c.status().ToString();
}

TEST(ConfigTest, ClearErrors) {
  std::string path = WriteTemp("[stream]\nwindoww = \"1m\"\n");
  auto c = LoadConfig(path, nullptr);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("unknown key stream.windoww"), std::string::npos);
  std::remove(path.c_str());

  std::string bad = "JOULE_STORAGE_DURABILITY=sometimes";
  char* env[] = {bad.data(), nullptr};
  c = LoadConfig("", env);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("JOULE_STORAGE_DURABILITY"), std::string::npos);

  std::string bad_dur = "JOULE_STREAM_IDLE_TIMEOUT=soon";
  char* env2[] = {bad_dur.data(), nullptr};
  EXPECT_FALSE(LoadConfig("", env2).ok());
}

// Unlike an unknown key in a file (an error: the file is the config's own), an unknown
// JOULE_* variable is a warning — test harnesses and tools share the prefix — which
// `joule serve` and `joule config` print, so a misspelling does not go unnoticed.
TEST(ConfigTest, UnknownVariableIsAWarning) {
  std::string typo = "JOULE_LIMITS_MAX_BODY_BYTS=1KiB";
  std::string good = "JOULE_LIMITS_MAX_BODY_BYTES=2KiB";
  char* env[] = {typo.data(), good.data(), nullptr};
  std::vector<std::string> warnings;
  auto c = LoadConfig("", env, &warnings);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->max_body_bytes, 2u << 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("JOULE_LIMITS_MAX_BODY_BYTS"), std::string::npos) << warnings[0];
}

// A base window that does not tile hours and local days would put a window's samples in
// the wrong 1h/1d rollup (found by a black-box test with 7m and 10m windows).
TEST(ConfigTest, WindowMustDivideAQuarterHour) {
  for (const char* ok : {"1s", "10s", "30s", "1m", "5m", "15m"}) {
    std::string var = std::string("JOULE_STREAM_WINDOW=") + ok;
    char* env[] = {var.data(), nullptr};
    EXPECT_TRUE(LoadConfig("", env).ok()) << ok;
  }
  for (const char* bad : {"7m", "10m", "1h", "7s", "0s"}) {
    std::string var = std::string("JOULE_STREAM_WINDOW=") + bad;
    char* env[] = {var.data(), nullptr};
    auto c = LoadConfig("", env);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("15 minutes"), std::string::npos) << c.status().ToString();
  }
}

TEST(ConfigTest, TomlRoundTrip) {
  char* env[] = {nullptr};
  auto c = LoadConfig("", env);
  ASSERT_TRUE(c.ok());
  std::string path = WriteTemp(ConfigToToml(*c));
  auto again = LoadConfig(path, env);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->window_ns, c->window_ns);
  EXPECT_EQ(again->http_listen, c->http_listen);
  std::remove(path.c_str());
}

TEST(ConfigTest, LogPrewriteBytesCanBeSetOrTurnedOff) {
  char* none[] = {nullptr};
  for (const auto& [text, bytes] :
       std::vector<std::pair<std::string, uint64_t>>{{"0", 0}, {"1MiB", 1u << 20}}) {
    std::string var = "JOULE_STORAGE_LOG_PREWRITE_BYTES=" + text;
    char* env[] = {var.data(), nullptr};
    auto c = LoadConfig("", env);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->log_prewrite_bytes, bytes) << text;
    std::string path = WriteTemp(ConfigToToml(*c));
    auto again = LoadConfig(path, none);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(again->log_prewrite_bytes, bytes) << text;
    std::remove(path.c_str());
  }
  std::string bad = "JOULE_STORAGE_LOG_PREWRITE_BYTES=lots";
  char* env[] = {bad.data(), nullptr};
  EXPECT_FALSE(LoadConfig("", env).ok());
}

TEST(ConfigTest, BackgroundNiceDefaultRangeAndRoundTrip) {
  char* none[] = {nullptr};
  auto d = LoadConfig("", none);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->background_nice, 5);
  std::string zero = "JOULE_SERVER_BACKGROUND_NICE=0";
  char* env[] = {zero.data(), nullptr};
  auto c = LoadConfig("", env);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->background_nice, 0);
  std::string path = WriteTemp(ConfigToToml(*c));
  auto again = LoadConfig(path, none);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->background_nice, 0);
  std::remove(path.c_str());
  for (std::string bad : {"JOULE_SERVER_BACKGROUND_NICE=20", "JOULE_SERVER_BACKGROUND_NICE=-1"}) {
    char* benv[] = {bad.data(), nullptr};
    auto r = LoadConfig("", benv);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("JOULE_SERVER_BACKGROUND_NICE"), std::string::npos)
        << r.status().message();
  }
}

TEST(ConfigTest, LogDefaultsAndSubMillisecondDurationsRoundTrip) {
  char* none[] = {nullptr};
  auto d = LoadConfig("", none);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->log_partitions, 0u);  // the existing log's count, else processor_threads
  EXPECT_EQ(d->log_group_commit_window_ns, 0);
  EXPECT_EQ(d->log_prewrite_bytes, 8u << 20);
  EXPECT_EQ(d->log_prewrite_bytes, log::LogOptions{}.prewrite_bytes);  // the log's default

  std::string var = "JOULE_STORAGE_LOG_GROUP_COMMIT_WINDOW=250us";
  char* env[] = {var.data(), nullptr};
  auto c = LoadConfig("", env);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->log_group_commit_window_ns, 250'000);
  const std::string toml = ConfigToToml(*c);
  EXPECT_NE(toml.find("log_group_commit_window = \"250us\""), std::string::npos) << toml;
  std::string path = WriteTemp(toml);
  auto again = LoadConfig(path, none);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->log_group_commit_window_ns, 250'000);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace joule::app
