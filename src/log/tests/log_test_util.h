// Helpers shared by the log tests: temp dirs, synchronous appends, reading a partition.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "log/log.h"
#include "log/segment_format.h"

namespace joule::log::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "joule-log-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A one-shot gate: callbacks block in Wait() until the test calls Open().
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> l(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(l, [&] { return open_; });
  }
  // Blocks until some thread is inside Wait().
  void WaitEntered() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return entered_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  bool entered_ = false;
};

// Appends and waits for the durability callback; returns the first offset.
inline model::LogOffset AppendSync(Log* log, uint32_t partition, std::vector<std::string> records) {
  std::promise<model::LogOffset> done;
  auto fut = done.get_future();
  Status st = log->Append(partition, std::move(records), [&](Status s, model::LogOffset first) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    done.set_value(first);
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  if (!st.ok()) return model::LogOffset{~0ull};
  return fut.get();
}

// Reads every durable record of a partition from `from`, `chunk` records per Next().
inline std::vector<LogRecord> ReadAll(Log* log, uint32_t partition, uint64_t from = 0,
                                      size_t chunk = 7) {
  std::vector<LogRecord> out;
  auto reader = log->NewReader(partition, model::LogOffset{from});
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  if (!reader.ok()) return out;
  for (;;) {
    auto n = (*reader)->Next(chunk, &out);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) break;
    EXPECT_LE(*n, chunk);
  }
  return out;
}

// A payload that identifies its partition and index and varies in length.
inline std::string Payload(uint32_t partition, uint64_t index, size_t base_len = 150) {
  // (Built with append: GCC 12's -Wrestrict misfires on "literal" + std::string at -O3.)
  std::string s = "p";
  s.append(std::to_string(partition)).append("-i").append(std::to_string(index)).append("-");
  size_t len = base_len + (index * 37) % 50;
  while (s.size() < len) s.push_back(static_cast<char>('a' + (s.size() + index) % 26));
  return s;
}

inline std::vector<std::string> SegmentFiles(const std::string& dir, uint32_t partition) {
  std::vector<std::string> files;
  std::string pdir = dir + "/" + PartitionDirName(partition);
  for (const auto& e : std::filesystem::directory_iterator(pdir)) {
    if (ParseSegmentFileName(e.path().filename().string())) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace joule::log::testing
