// FlatStringMap against std::map as the model: inserts through several growths, lookups of
// present and absent keys, colliding hashes (a caller-supplied hash), prefetch calls on an
// empty and a full table.
#include "common/flat_string_map.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

namespace joule {
namespace {

TEST(FlatStringMapTest, BehavesLikeAMap) {
  FlatStringMap<int> m;
  std::map<std::string, int> model;
  EXPECT_EQ(m.Find("x"), nullptr);
  m.PrefetchSlot(FlatStringMap<int>::Hash("x"));
  m.PrefetchEntry(FlatStringMap<int>::Hash("x"));
  std::mt19937 rng(1);
  for (int i = 0; i < 20000; ++i) {
    const std::string key = "dev-" + std::to_string(rng() % 5000);
    auto [v, inserted] = m.TryEmplace(key);
    EXPECT_EQ(inserted, model.count(key) == 0) << key;
    if (inserted) {
      EXPECT_EQ(*v, 0);
    }
    *v += i;
    model[key] += i;
  }
  ASSERT_EQ(m.size(), model.size());
  for (const auto& [key, value] : model) {
    const int* v = m.Find(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(*v, value);
    m.PrefetchEntry(FlatStringMap<int>::Hash(key));
  }
  EXPECT_EQ(m.Find("dev-5000"), nullptr);
  EXPECT_EQ(m.Find(""), nullptr);
  size_t n = 0;
  for (const auto& [key, value] : m.entries()) {
    EXPECT_EQ(model.at(key), value);
    ++n;
  }
  EXPECT_EQ(n, model.size());
}

TEST(FlatStringMapTest, KeysWithTheSameHashStayApart) {
  FlatStringMap<std::string> m;
  for (int i = 0; i < 100; ++i) {
    const std::string key = "k" + std::to_string(i);
    *m.TryEmplace(key, /*hash=*/42).first = key;  // every key collides
  }
  for (int i = 0; i < 100; ++i) {
    const std::string key = "k" + std::to_string(i);
    const std::string* v = m.Find(key, 42);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(*v, key);
    EXPECT_EQ(m.Find(key, 43), nullptr);  // another hash: another probe sequence
  }
  EXPECT_FALSE(m.TryEmplace("k7", 42).second);
  EXPECT_EQ(m.size(), 100u);
}

}  // namespace
}  // namespace joule
