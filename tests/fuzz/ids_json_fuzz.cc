// Bytes as a pre-tokenized text (.ids.json): calibration and evaluation windows drawn from it.
#include "core/runtime/token_windows.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& scratch = lowbit::fuzz::TheScratch();
  const std::string uri = scratch.Put("calib.ids.json", data, size);
  lowbit::TokenSource source;
  source.vocab_size = 512;
  lowbit::CalibrationWindows(scratch.store(), uri, source, {4, 16, 0}).IgnoreError();
  lowbit::MakeEvaluationWindows(scratch.store(), uri, source, 2, 16).IgnoreError();
  return 0;
}
