#include "tests/test_util/reference_checkpoints.h"

#include <cstdlib>

#include "tests/test_util/temp_dir.h"

namespace lowbit::testing {

const std::string& ReferenceCheckpointDir() {
  static const TempDir* dir = new TempDir();  // kept for the process's life
  static const std::string path = [] {
    const std::string command = "/usr/bin/python3 " LOWBIT_SOURCE_DIR "/tests/reference/hf_reference.py " + dir->path();
    return std::system(command.c_str()) == 0 ? dir->path() : std::string();
  }();
  return path;
}

}  // namespace lowbit::testing
