// The local object store: ranged reads, atomic writes, and that nothing outside its root is reachable.
#include "core/storage/local_object_store.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "absl/strings/match.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

TEST(LocalObjectStoreTest, RangedReadsAndBounds) {
  testing::TempDir dir;
  std::ofstream(dir.File("obj")) << "0123456789";
  auto store = *LocalObjectStore::Create({dir.path()});
  EXPECT_EQ(*store->ReadRange("obj", 3, 4), "3456");
  EXPECT_EQ(*store->ReadRange("file:///obj", 0, 10), "0123456789");
  EXPECT_EQ(store->ReadRange("obj", 8, 4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store->Stat("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Stat("obj")->size, 10u);
}

TEST(LocalObjectStoreTest, RereadsAFileThatWasReplaced) {
  testing::TempDir dir;
  auto store = *LocalObjectStore::Create({dir.path()});
  ASSERT_TRUE(store->WriteAll("f", "first").ok());
  EXPECT_EQ(*store->ReadAll("f"), "first");
  ASSERT_TRUE(store->WriteAll("f", "second!").ok());
  EXPECT_EQ(*store->ReadAll("f"), "second!");
}

TEST(LocalObjectStoreTest, WriterIsInvisibleUntilCommitAndAbortLeavesNothing) {
  testing::TempDir dir;
  auto store = *LocalObjectStore::Create({dir.path()});
  {
    auto writer = *store->NewWriter("out/a.bin");
    ASSERT_TRUE(writer->Append("data").ok());
    EXPECT_EQ(store->Stat("out/a.bin").status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(store->List("out/")->empty()) << "partial files are not listed";
    ASSERT_TRUE(writer->Commit().ok());
  }
  EXPECT_EQ(*store->ReadAll("out/a.bin"), "data");
  {
    auto writer = *store->NewWriter("out/b.bin");
    ASSERT_TRUE(writer->Append("x").ok());
  }  // destroyed without Commit
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.File("out")), {}), 1);
}

TEST(LocalObjectStoreTest, NothingOutsideTheRootIsReachable) {
  testing::TempDir outer;
  std::filesystem::create_directory(outer.File("root"));
  std::ofstream(outer.File("secret")) << "s";
  std::filesystem::create_symlink(outer.File("secret"), outer.File("root/link"));
  auto store = *LocalObjectStore::Create({outer.File("root")});
  EXPECT_EQ(store->Stat("../secret").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store->Stat("file:///a/../../secret").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store->Stat("link").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store->NewWriter("../evil").status().code(), absl::StatusCode::kPermissionDenied);
  // An absolute path names a place inside the root, not the host's filesystem.
  EXPECT_EQ(store->Stat(outer.File("secret")).status().code(), absl::StatusCode::kNotFound);
}

TEST(LocalObjectStoreTest, DeleteRemovesDirectoriesItLeftEmpty) {
  testing::TempDir dir;
  auto store = *LocalObjectStore::Create({dir.path()});
  ASSERT_TRUE(store->WriteAll("a/b/c.txt", "x").ok());
  ASSERT_TRUE(store->Delete("a/b/c.txt").ok());
  EXPECT_FALSE(std::filesystem::exists(dir.File("a")));
  EXPECT_TRUE(std::filesystem::exists(dir.path()));
  EXPECT_TRUE(store->Delete("a/b/c.txt").ok()) << "deleting an absent object is not an error";
}


TEST(UriTest, SpellingsOfOnePlaceNormalizeAlike) {
  EXPECT_EQ(NormalizedUri("file:///m/./x//y/../z"), "file:///m/x/z");
  EXPECT_EQ(NormalizedUri("models/./x/"), "models/x");
  EXPECT_EQ(NormalizedUri("s3://bucket//a/../b"), "s3://bucket/b");
  EXPECT_EQ(NormalizedUri("/../../etc"), "/etc") << "never above the root";
  EXPECT_TRUE(UriWithin("models/./x/out", "models/x"));
  EXPECT_TRUE(UriWithin("models/x", "models//x/"));
  EXPECT_FALSE(UriWithin("models/xy", "models/x")) << "a sibling sharing a prefix";
  EXPECT_FALSE(UriWithin("models/x", "models/x/y"));
}

// A path longer than PATH_MAX is refused at once (resolving it used to take time quadratic in its length).
TEST(LocalObjectStoreTest, PathsLongerThanPathMaxAreRefused) {
  testing::TempDir dir;
  auto store = *LocalObjectStore::Create({dir.path()});
  std::string path = "file://" + dir.path();
  for (int i = 0; i < 20000; ++i) path += "/a";
  const absl::Status s = store->Stat(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "longer than PATH_MAX")) << s;
}

}  // namespace
}  // namespace lowbit
