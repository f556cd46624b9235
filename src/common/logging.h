// Structured logging as JSON lines on stderr: {"ts":…,"level":…,"msg":…,<fields>}.
// Thread-safe. Never log once per bad input message: count it in a metric instead.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace joule::logging {

enum class Level { kDebug = 0, kInfo, kWarn, kError };

void SetLevel(Level level);
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
