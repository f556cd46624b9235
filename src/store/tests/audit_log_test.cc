#include "store/audit/audit_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace joule::store {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("audit_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    path_ = (dir_ / "audit" / "audit.jsonl").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static AuditEntry Entry(int64_t t, std::string action, std::string actor, std::string id) {
    AuditEntry e;
    e.time_ns = t * kSecond;
    e.action = std::move(action);
    e.actor = std::move(actor);
    e.target_kind = "device";
    e.target_id = std::move(id);
    e.remote_address = "127.0.0.1";
    return e;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(AuditLogTest, AppendsQueriesAndSurvivesReopen) {
  {
    auto log = AuditLog::Open(path_);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    ASSERT_TRUE((*log)->Append(Entry(100, "device.registered", "admin", "plug-1")).ok());
    AuditEntry e = Entry(200, "device.updated", "owner:home-7", "plug-1");
    e.details_json = R"({"fields":["name"]})";
    ASSERT_TRUE((*log)->Append(e).ok());
    ASSERT_TRUE((*log)->Append(Entry(300, "rule.created", "owner:home-7", "r-1")).ok());
  }
  auto log = AuditLog::Open(path_);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ((*log)->size(), 3u);
  AuditQuery all;
  auto page = (*log)->Query(all);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->lines.size(), 3u);
  EXPECT_EQ(page->next, 0u);
  EXPECT_NE(page->lines[0].find(R"("seq":1)"), std::string::npos) << page->lines[0];
  EXPECT_NE(page->lines[0].find(R"("action":"device.registered")"), std::string::npos);
  EXPECT_NE(page->lines[1].find(R"("details":{"fields":["name"]})"), std::string::npos);

  AuditQuery devices;
  devices.action = "device.";
  page = (*log)->Query(devices);
  ASSERT_EQ(page->lines.size(), 2u);
  AuditQuery owner;
  owner.actor = "owner:home-7";
  owner.from_ns = 250 * kSecond;
  page = (*log)->Query(owner);
  ASSERT_EQ(page->lines.size(), 1u);
  EXPECT_NE(page->lines[0].find("rule.created"), std::string::npos);
  AuditQuery target;
  target.target_id = "plug-1";
  target.to_ns = 200 * kSecond;  // exclusive
  page = (*log)->Query(target);
  ASSERT_EQ(page->lines.size(), 1u);
  // A new append continues the sequence after a reopen.
  ASSERT_TRUE((*log)->Append(Entry(400, "device.deleted", "admin", "plug-1")).ok());
  page = (*log)->Query(all);
  ASSERT_EQ(page->lines.size(), 4u);
  EXPECT_NE(page->lines[3].find(R"("seq":4)"), std::string::npos);
}

TEST_F(AuditLogTest, PagesNeitherSkipNorRepeat) {
  auto log = AuditLog::Open(path_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE((*log)
                    ->Append(Entry(i, i % 2 ? "rule.updated" : "device.updated", "admin",
                                   "x" + std::to_string(i)))
                    .ok());
  }
  AuditQuery q;
  q.action = "rule.updated";
  q.limit = 4;
  std::vector<std::string> seen;
  for (int pages = 0; pages < 10; ++pages) {
    auto page = (*log)->Query(q);
    ASSERT_TRUE(page.ok());
    seen.insert(seen.end(), page->lines.begin(), page->lines.end());
    if (page->next == 0) break;
    q.after = page->next;
  }
  ASSERT_EQ(seen.size(), 12u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_NE(seen[i].find("\"id\":\"x" + std::to_string(2 * i + 1) + "\""), std::string::npos)
        << seen[i];
  }
}

TEST_F(AuditLogTest, TornTailIsCutAndAppendsGoOn) {
  {
    auto log = AuditLog::Open(path_);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Entry(1, "device.registered", "admin", "a")).ok());
  }
  const auto intact = std::filesystem::file_size(path_);
  {
    std::ofstream out(path_, std::ios::app);
    out << R"({"seq":2,"time":"2026-11-28T00:00:00.000Z","act)";  // a crash mid-append
  }
  auto log = AuditLog::Open(path_);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ((*log)->size(), 1u);
  EXPECT_EQ(std::filesystem::file_size(path_), intact);
  ASSERT_TRUE((*log)->Append(Entry(2, "device.deleted", "admin", "a")).ok());
  auto again = AuditLog::Open(path_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->size(), 2u);
}

TEST_F(AuditLogTest, DamagedCompleteLineIsReported) {
  std::filesystem::create_directories(dir_ / "audit");
  {
    std::ofstream out(path_);
    out << "not json at all\n";
  }
  auto log = AuditLog::Open(path_);
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().ToString().find("unreadable entry at byte 0"), std::string::npos)
      << log.status().ToString();
}

}  // namespace
}  // namespace joule::store
