// What every fuzz target shares: the input written to a real file under a private directory (in /dev/shm
// when it exists), read through the LocalObjectStore the server uses, and a reader drained to the end.
#ifndef LOWBIT_TESTS_FUZZ_FUZZ_UTIL_H_
#define LOWBIT_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "core/checkpoint/checkpoint_reader.h"
#include "core/storage/local_object_store.h"

namespace lowbit::fuzz {

class Scratch {
 public:
  Scratch() {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    dir_ = (base / ("lowbit-fuzz-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir_);
    store_ = *LocalObjectStore::Create({dir_});
  }
  ~Scratch() { std::filesystem::remove_all(dir_); }

  // Writes `data` as `name` (relative to the scratch root) and returns its URI.
  std::string Put(const std::string& name, const uint8_t* data, size_t size) {
    std::filesystem::create_directories(std::filesystem::path(dir_ + "/" + name).parent_path());
    std::ofstream(dir_ + "/" + name, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                             static_cast<std::streamsize>(size));
    return name;
  }
  std::string Put(const std::string& name, const std::string& text) {
    return Put(name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  }
  void Clear() {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  LocalObjectStore* store() { return store_.get(); }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::unique_ptr<LocalObjectStore> store_;
};

inline Scratch& TheScratch() {
  static Scratch* scratch = new Scratch();  // lives as long as the fuzzing process
  return *scratch;
}

// Reads every tensor a reader offers, as a job would (each read checks its own bounds).
inline void Drain(CheckpointReader* reader) {
  for (const TensorInfo& info : reader->tensors()) {
    if (info.size > (64u << 20)) continue;  // the harness's memory, not the parser's limit
    reader->Read(info).IgnoreError();
  }
}

}  // namespace lowbit::fuzz

#endif  // LOWBIT_TESTS_FUZZ_FUZZ_UTIL_H_
