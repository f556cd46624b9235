// RecordBatch: the records of one Log::AppendBatch packed into one buffer — record i is
// bytes [end(i−1), end(i)) of data — so a producer encodes a batch with no string per
// record (EventAppender encodes events straight into it).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace joule::log {

class RecordBatch {
 public:
  // Appends one record: write its bytes at the end of *buffer(), then call EndRecord().
  std::string* buffer() { return &data_; }
  void EndRecord() { ends_.push_back(data_.size()); }
  void Add(std::string_view record) {
    data_.append(record);
    EndRecord();
  }

  // Room for `records` records of `bytes` payload bytes in all, so that a producer that
  // knows about how much it will add does not grow the buffers step by step.
  void Reserve(size_t records, size_t bytes) {
    ends_.reserve(records);
    data_.reserve(bytes);
  }

  size_t size() const { return ends_.size(); }  // records
  bool empty() const { return ends_.empty(); }
  size_t bytes() const { return data_.size(); }  // payload bytes of all records
  std::string_view operator[](size_t i) const {
    const size_t begin = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(data_).substr(begin, ends_[i] - begin);
  }

 private:
  std::string data_;
  std::vector<size_t> ends_;  // end of each record in data_
};

}  // namespace joule::log
