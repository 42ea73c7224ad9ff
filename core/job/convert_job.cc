#include "core/job/convert_job.h"

#include "absl/cleanup/cleanup.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/checkpoint/safetensors.h"
#include "core/job/output_transaction.h"
#include "core/util/status_macros.h"

namespace lowbit {

absl::Status RunConvertJob(ObjectStore* store, const std::string& source_uri, const std::string& destination_uri,
                           bool overwrite) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenCheckpoint(store, source_uri));
  const std::string owner = NewLockOwner();
  bool held_before = false;
  RETURN_IF_ERROR(LockDestination(store, destination_uri, owner, &held_before));
  absl::Cleanup unlock = [&] { UnlockDestination(store, destination_uri, owner).IgnoreError(); };
  RETURN_IF_ERROR(CheckDestination(store, destination_uri, overwrite));
  std::vector<TensorSpec> specs;
  for (const TensorInfo& t : reader->tensors()) specs.push_back({t.name, t.dtype, t.shape});
  OutputTransaction output(store, destination_uri);
  RETURN_IF_ERROR(output.Begin());
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> out, output.NewWriter("model.safetensors"));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer, SafetensorsWriter::Create(out.get(), specs));
  for (const TensorInfo& info : reader->tensors()) {
    ASSIGN_OR_RETURN(Tensor tensor, reader->Read(info));
    RETURN_IF_ERROR(writer->Append(tensor.name, tensor.bytes));
  }
  RETURN_IF_ERROR(writer->Finish());
  RETURN_IF_ERROR(out->Commit());
  RETURN_IF_ERROR(output.WriteAll("config.json", reader->descriptor().config.dump(2), nullptr));
  return output.Commit("config.json");
}

}  // namespace lowbit
