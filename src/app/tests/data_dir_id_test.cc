#include "app/data_dir_id.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

namespace joule::app {
namespace {

std::string TempDir() {
  std::string t = (std::filesystem::temp_directory_path() / "joule-ddid-XXXXXX").string();
  return mkdtemp(t.data());
}

// The webhook-id salt is created once and kept, also when the data dir id is renewed (a
// memory latest store renews it at every start): a transition re-derived after a restart
// gets the webhook-id it had. Another data dir gets another salt, so two deployments with
// the same device and rule ids never share a webhook-id (found by a black-box soak).
TEST(DataDirIdTest, TheWebhookIdSaltIsKeptAndPerDataDir) {
  const std::string a = TempDir(), b = TempDir();
  Result<std::string> salt = LoadOrCreateWebhookIdSalt(a + "/alerts");
  ASSERT_TRUE(salt.ok()) << salt.status().ToString();
  EXPECT_EQ(salt->size(), 32u);
  ASSERT_TRUE(RenewDataDirId(a).ok());
  EXPECT_EQ(*LoadOrCreateWebhookIdSalt(a + "/alerts"), *salt);
  EXPECT_NE(*LoadOrCreateWebhookIdSalt(b + "/alerts"), *salt);
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
}

}  // namespace
}  // namespace joule::app
