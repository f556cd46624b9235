// AuditLog: an append-only record of administrative actions (device registered, updated,
// deleted, token rotated, owner key created, rule created/changed/deleted, alert acked or
// snoozed): who, what, when — one JSON object per line in {data_dir}/audit/audit.jsonl
// (docs/formats/audit.md). Each append is fdatasync'ed before the API answers. Admin
// actions are rare, so an in-memory index of (offset, time, action, actor, target) is
// rebuilt at open and queries read the matching lines back with pread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace joule::store {

struct AuditEntry {
  int64_t time_ns = 0;
  std::string actor;        // "admin", "owner:<id>", "device:<id>", "cli"
  std::string action;       // e.g. "device.registered"
  std::string target_kind;  // "device", "owner", "rule", "alert"
  std::string target_id;
  std::string remote_address;  // peer IP, empty for the CLI
  std::string details_json;    // a JSON object, or empty; never secrets
};

struct AuditQuery {
  int64_t from_ns = INT64_MIN;  // inclusive
  int64_t to_ns = INT64_MAX;    // exclusive
  std::string action;           // exact match, or a prefix ending in '.' ("device.")
  std::string actor;            // exact match
  std::string target_id;        // exact match
  size_t limit = 100;
  uint64_t after = 0;  // sequence number of the last entry of the previous page (0 = start)
};

struct AuditPage {
  std::vector<std::string> lines;  // JSON objects, oldest first
  uint64_t next = 0;               // pass as `after` for the next page; 0 = no more
};

class AuditLog {
 public:
  // Opens (creating the directory and file if needed) and indexes `path`. A torn last line
  // (a crash in the middle of an append) is cut off; any other unreadable line is an error.
  static Result<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one line and fdatasyncs it. Each entry gets the next sequence number (1, 2, …),
  // written as "seq".
  Status Append(const AuditEntry& entry);
  Result<AuditPage> Query(const AuditQuery& query) const;
  size_t size() const;

  static std::string Encode(uint64_t seq, const AuditEntry& entry);

 private:
  struct IndexEntry {
    uint64_t offset;
    uint32_t length;  // without the newline
    int64_t time_ns;
    std::string action, actor, target_id;
  };
  AuditLog(int fd, std::string path);
  Status Index();

  int fd_;
  std::string path_;
  mutable std::mutex mu_;
  std::vector<IndexEntry> index_;  // index_[i] has seq i + 1
  uint64_t end_ = 0;
};

}  // namespace joule::store
