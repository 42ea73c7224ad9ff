// The tiny random checkpoints of tests/reference/hf_reference.py (one per architecture and config variant)
// with their reference logits, written once per test process into a temporary directory.
#ifndef LOWBIT_TESTS_TEST_UTIL_REFERENCE_CHECKPOINTS_H_
#define LOWBIT_TESTS_TEST_UTIL_REFERENCE_CHECKPOINTS_H_

#include <string>

namespace lowbit::testing {

// The directory holding <variant>/{config.json, model.safetensors, windows.json, logits.f32} and
// variants.json; empty if the script failed (the caller's assertion says so).
const std::string& ReferenceCheckpointDir();

}  // namespace lowbit::testing

#endif  // LOWBIT_TESTS_TEST_UTIL_REFERENCE_CHECKPOINTS_H_
