// Structured logging as JSON lines on stderr: {"ts":…,"level":…,"msg":…,<fields>} — the
// server's log (docs/OPERATIONS.md "Logs"). The command-line tools (`joule export`,
// `replay`, `devices`, …) print plain text instead (SetPlainText): "joule: msg (k=v, …)",
// "joule: warning: …" / "joule: error: …" above info. Thread-safe. Never log once per bad input
// message: count it in a metric instead.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace joule::logging {

enum class Level { kDebug = 0, kInfo, kWarn, kError };

void SetLevel(Level level);
// Plain-text lines `{prefix}: [warning: |error: ]msg (key=value, …)` from now on, for a
// process that is not the server. Call before any other thread logs.
void SetPlainText(std::string_view prefix);
bool ParseLevel(std::string_view name, Level* out);

using Field = std::pair<std::string_view, std::string>;
void Log(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) {
  Log(Level::kDebug, m, f);
}
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) {
  Log(Level::kInfo, m, f);
}
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) {
  Log(Level::kWarn, m, f);
}
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) {
  Log(Level::kError, m, f);
}

}  // namespace joule::logging
