#include "core/storage/object_store.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/util/status_macros.h"

namespace lowbit {

absl::StatusOr<std::string> ObjectStore::ReadAll(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectInfo info, Stat(uri));
  return ReadRange(uri, 0, info.size);
}

std::string ObjectStore::Identity(absl::string_view uri) { return NormalizedUri(uri); }

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

std::string NormalizedUri(absl::string_view uri) {
  std::string scheme;
  if (const size_t at = uri.find("://"); at != absl::string_view::npos) {
    scheme = std::string(uri.substr(0, at + 3));
    uri.remove_prefix(at + 3);
  }
  const bool absolute = absl::StartsWith(uri, "/");
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(uri, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  return absl::StrCat(scheme, absolute ? "/" : "", absl::StrJoin(parts, "/"));
}

bool UriWithin(absl::string_view inner, absl::string_view outer) {
  const std::string i = NormalizedUri(inner), o = NormalizedUri(outer);
  return i == o || (absl::StartsWith(i, o) && (o.empty() || o.back() == '/' || i[o.size()] == '/'));
}

}  // namespace lowbit
