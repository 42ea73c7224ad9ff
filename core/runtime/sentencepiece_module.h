// The C interface of lowbit's SentencePiece module (liblowbit_sentencepiece.so), which wraps Debian's
// libsentencepiece. That library carries its own copy of protobuf 3.14 and aborts (or crashes) in a process
// that also loads gRPC's protobuf 3.21, so lowbit loads the module with dlopen(RTLD_LOCAL | RTLD_DEEPBIND):
// the module and libsentencepiece resolve their symbols among themselves first, and none of theirs reach
// the rest of the process. This header is all the two sides share; it includes neither library.
#ifndef LOWBIT_CORE_RUNTIME_SENTENCEPIECE_MODULE_H_
#define LOWBIT_CORE_RUNTIME_SENTENCEPIECE_MODULE_H_

#include <cstddef>

extern "C" {
// A processor for a serialized ModelProto, or null with a NUL-terminated reason in `error`.
void* lowbit_spm_load(const char* model, size_t model_size, char* error, size_t error_size);
void lowbit_spm_free(void* processor);
// Ids of `text` into a buffer the caller releases with lowbit_spm_release; 0 on success.
int lowbit_spm_encode(const void* processor, const char* text, size_t text_size, int** ids, size_t* count);
// Text of `ids` into a buffer the caller releases with lowbit_spm_release; 0 on success.
int lowbit_spm_decode(const void* processor, const int* ids, size_t count, char** text, size_t* text_size);
int lowbit_spm_vocab_size(const void* processor);
int lowbit_spm_bos(const void* processor);  // -1 if the model has none
int lowbit_spm_eos(const void* processor);  // -1 if the model has none
// Piece `id`: its text (owned by the processor), score and kind (0 normal, 1 unknown, 2 control, 3 unused,
// 4 byte); 0 on success.
int lowbit_spm_piece(const void* processor, int id, const char** text, size_t* text_size, float* score, int* kind);
void lowbit_spm_release(void* buffer);
}

#endif  // LOWBIT_CORE_RUNTIME_SENTENCEPIECE_MODULE_H_
