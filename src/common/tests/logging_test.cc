// Logging: JSON lines for the server, plain text for the command-line tools (found by a
// black-box test: `joule export` printed the archive's JSON lines, while OPERATIONS.md says
// the other subcommands write plain text).
#include "common/logging.h"

#include <gtest/gtest.h>

#include <string>

namespace joule::logging {
namespace {

TEST(LoggingTest, JsonLinesThenPlainText) {
  testing::internal::CaptureStderr();
  Info("archive recovered", {{"temp_files_removed", "1"}});
  std::string json = testing::internal::GetCapturedStderr();
  EXPECT_EQ(json.rfind("{\"ts\":", 0), 0u) << json;
  EXPECT_NE(json.find(R"("level":"info","msg":"archive recovered","temp_files_removed":"1"})"),
            std::string::npos)
      << json;

  SetPlainText("joule");
  testing::internal::CaptureStderr();
  Info("archive recovered", {{"temp_files_removed", "1"}, {"files_rolled_back", "0"}});
  Error("archive: sealing failed", {{"error", "io_error: No space left on device"}});
  Warn("plain");
  std::string plain = testing::internal::GetCapturedStderr();
  EXPECT_EQ(plain,
            "joule: archive recovered (temp_files_removed=1, files_rolled_back=0)\n"
            "joule: error: archive: sealing failed (error=io_error: No space left on device)\n"
            "joule: warning: plain\n");
}

}  // namespace
}  // namespace joule::logging
