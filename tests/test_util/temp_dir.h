// A fresh directory under $TEST_TMPDIR (or /tmp), removed with everything in it on destruction.
#ifndef LOWBIT_TESTS_TEST_UTIL_TEMP_DIR_H_
#define LOWBIT_TESTS_TEST_UTIL_TEMP_DIR_H_

#include <string>

namespace lowbit::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Path of a file in ../shared/data.
std::string SharedData(const std::string& relative);

// A whole file's bytes ("" if it cannot be read).
std::string ReadFile(const std::string& path);

}  // namespace lowbit::testing

#endif  // LOWBIT_TESTS_TEST_UTIL_TEMP_DIR_H_
