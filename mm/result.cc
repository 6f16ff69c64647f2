// mm/result.cc: names of error codes for messages.
#include "mm/result.h"

namespace pmemfuse {

const char* errc_name(Errc c) {
  switch (c) {
    case Errc::kNotFound: return "not found";
    case Errc::kExists: return "exists";
    case Errc::kNotDir: return "not a directory";
    case Errc::kIsDir: return "is a directory";
    case Errc::kNotEmpty: return "directory not empty";
    case Errc::kNoSpace: return "no space";
    case Errc::kNameTooLong: return "name too long";
    case Errc::kInvalid: return "invalid argument";
    case Errc::kCorrupt: return "structure needs cleaning";
    case Errc::kIo: return "I/O error";
    case Errc::kPerm: return "not permitted";
    case Errc::kTooManyLinks: return "too many links";
    case Errc::kNoData: return "no such attribute";
    case Errc::kRange: return "buffer too small";
    case Errc::kTooBig: return "attribute too large";
    case Errc::kFileTooBig: return "file too large";
    case Errc::kReadOnly: return "read-only filesystem";
    case Errc::kNotSupported: return "not supported";
    case Errc::kBusy: return "busy";
    case Errc::kCrossDevice: return "cross-device link";
    case Errc::kAccess: return "permission denied";
    case Errc::kNoOffset: return "no such offset";
  }
  return "unknown error";
}

}  // namespace pmemfuse
