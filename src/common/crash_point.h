// Test-only fault hook for crash tests: `JOULE_TEST_CRASH_AT=name:N[,name:N…]` (read once,
// at the first CrashPoint call) makes the N-th call of CrashPoint("name") in this process
// write one line to stderr and kill the process with SIGKILL, as an operator's `kill -9`
// at exactly that moment would. Without the variable a CrashPoint call is one load and
// one compare. The named points are listed in src/common/README.md.
#pragma once

#include <string_view>

namespace joule {

void CrashPoint(std::string_view name);

}  // namespace joule
