#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::logging {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_mu;
std::string* g_plain_prefix = nullptr;  // set once, before other threads log
const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}
}  // namespace

void SetLevel(Level level) { g_level.store(static_cast<int>(level)); }

void SetPlainText(std::string_view prefix) {
  static std::string stored;
  stored = prefix;
  g_plain_prefix = &stored;
}

bool ParseLevel(std::string_view name, Level* out) {
  if (name == "debug")
    *out = Level::kDebug;
  else if (name == "info")
    *out = Level::kInfo;
  else if (name == "warn")
    *out = Level::kWarn;
  else if (name == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

void Log(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  if (g_plain_prefix) {
    std::string line = *g_plain_prefix + ": ";
    if (level == Level::kWarn) line += "warning: ";
    if (level == Level::kError) line += "error: ";
    line += msg;
    const char* sep = " (";
    for (const auto& [k, v] : fields) {
      line += sep;
      line += k;
      line += '=';
      line += v;
      sep = ", ";
    }
    if (fields.size() > 0) line += ')';
    line += '\n';
    std::lock_guard lock(g_mu);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
    return;
  }
  JsonWriter w;
  w.BeginObject();
  w.Key("ts");
  w.String(FormatRfc3339Millis(SystemClock::Default()->NowNanos()));
  w.Key("level");
  w.String(LevelName(level));
  w.Key("msg");
  w.String(msg);
  for (const auto& [k, v] : fields) {
    w.Key(k);
    w.String(v);
  }
  w.EndObject();
  std::string line = w.Take();
  line += '\n';
  std::lock_guard lock(g_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace joule::logging
