#include "app/engine_setup.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "store/metadata_store.h"

namespace joule::app {
namespace {

class MetadataTimezonesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("joule-tz-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto store =
        store::OpenMetadataStore(store::MetadataBackend::kSqlite, (dir_ / "metadata.db").string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // The store does not validate zone names (the API does): this is what plain SQL can
  // put there.
  void AddDevice(const std::string& id, const std::string& timezone) {
    store::Device d;
    d.device_id = id;
    d.owner_id = "o";
    d.timezone = timezone;
    ASSERT_TRUE(store_->CreateDevice(d, nullptr).ok());
  }

  std::filesystem::path dir_;
  std::unique_ptr<store::MetadataStore> store_;
};

TEST_F(MetadataTimezonesTest, KnownZonesPassUnknownOnesAreUtc) {
  AddDevice("berlin", "Europe/Berlin");
  AddDevice("utc", "UTC");
  AddDevice("mars", "Mars/Olympus");
  AddDevice("posix", "posix/Europe/Berlin");
  AddDevice("local", "localtime");
  MetadataTimezones timezones(store_.get());
  EXPECT_EQ(timezones.TimezoneOf("berlin"), "Europe/Berlin");
  EXPECT_EQ(timezones.TimezoneOf("utc"), "UTC");
  EXPECT_EQ(timezones.TimezoneOf("unregistered"), "UTC");
  // The engine computes the local days of an unknown zone in UTC; the records it writes
  // name the zone they were given, so it must be the one actually used (before, 1d records
  // said "timezone":"Mars/Olympus" with UTC boundaries).
  for (int i = 0; i < 2; ++i) {  // the second time from the checked names
    EXPECT_EQ(timezones.TimezoneOf("mars"), "UTC");
    EXPECT_EQ(timezones.TimezoneOf("posix"), "UTC");
    EXPECT_EQ(timezones.TimezoneOf("local"), "UTC");
    EXPECT_EQ(timezones.TimezoneOf("berlin"), "Europe/Berlin");
  }
}

}  // namespace
}  // namespace joule::app
