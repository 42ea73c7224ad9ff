#include "core/storage/object_store.h"

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {

absl::StatusOr<std::string> ObjectStore::ReadAll(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectInfo info, Stat(uri));
  return ReadRange(uri, 0, info.size);
}

absl::Status ObjectStore::WriteAll(absl::string_view uri, absl::string_view data) {
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> writer, NewWriter(uri));
  RETURN_IF_ERROR(writer->Append(data));
  return writer->Commit();
}

std::string JoinUri(absl::string_view dir, absl::string_view name) {
  while (!dir.empty() && dir.back() == '/') dir.remove_suffix(1);
  while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return absl::StrCat(dir, "/", name);
}

std::string ParentUri(absl::string_view uri) {
  const size_t slash = uri.rfind('/');
  return slash == absl::string_view::npos ? std::string() : std::string(uri.substr(0, slash));
}

}  // namespace lowbit
