// Bytes as a QuantizeModelRequest off the wire: the validation and mapping every submit goes through.
#include "server/proto_convert.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lowbit::v1::QuantizeModelRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  lowbit::server::JobSpecFromRequest(request).IgnoreError();
  return 0;
}
