// ReadBatch: the records one LogReader::Next call returns, packed into one buffer that is
// kept across calls. A consumer that reads the log all day (a processor, the archiver)
// then allocates nothing per record: clear() keeps the capacity, and a record's payload
// is a view into the batch's bytes instead of a string of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/log_offset.h"

namespace joule::log {

// One record of a ReadBatch. `payload` stays valid until the batch is cleared or
// destroyed (not across Add calls' growth: take views only after reading).
struct LogRecordView {
  model::LogOffset offset;
  int64_t append_time_ns = 0;  // wall time at which Append accepted the record's batch
  std::string_view payload;
};

class ReadBatch {
 public:
  // Copies `payload` into the batch.
  void Add(model::LogOffset offset, int64_t append_time_ns, std::string_view payload) {
    entries_.push_back(Entry{offset, append_time_ns, data_.size(), payload.size()});
    data_.append(payload);
  }
  void clear() {
    entries_.clear();
    data_.clear();
  }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  LogRecordView operator[](size_t i) const {
    const Entry& e = entries_[i];
    return LogRecordView{e.offset, e.append_time_ns,
                         std::string_view(data_.data() + e.begin, e.size)};
  }
  LogRecordView back() const { return (*this)[entries_.size() - 1]; }

  class Iterator {
   public:
    Iterator(const ReadBatch* batch, size_t i) : batch_(batch), i_(i) {}
    LogRecordView operator*() const { return (*batch_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& other) const { return i_ != other.i_; }

   private:
    const ReadBatch* batch_;
    size_t i_;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, entries_.size()); }

 private:
  struct Entry {
    model::LogOffset offset;
    int64_t append_time_ns;
    size_t begin;
    size_t size;
  };
  std::vector<Entry> entries_;
  std::string data_;
};

}  // namespace joule::log
