// Test-only pause hook for fault tests: `JOULE_TEST_HOLD=name:path[,name:path…]` (read once,
// at the first TestHeld call) makes TestHeld("name") return true while the file `path`
// exists. Code that reads work (the log consumers) skips a round while held, so a test can
// change files on disk before they are read — e.g. flip a bit in a sealed segment that a
// running server has not processed yet (tests/crash/test_corruption.py). Without the
// variable a call is one load and one compare. The named holds are listed in
// src/common/README.md.
#pragma once

#include <string_view>

namespace joule {

bool TestHeld(std::string_view name);

}  // namespace joule
