// daemon/errors.cc: Errc -> errno, as ext4 reports the same conditions.
#include "daemon/errors.h"

#include <cerrno>

namespace pmemfuse::daemon {

int to_errno(Errc c) {
  switch (c) {
    case Errc::kNotFound: return ENOENT;
    case Errc::kExists: return EEXIST;
    case Errc::kNotDir: return ENOTDIR;
    case Errc::kIsDir: return EISDIR;
    case Errc::kNotEmpty: return ENOTEMPTY;
    case Errc::kNoSpace: return ENOSPC;
    case Errc::kNameTooLong: return ENAMETOOLONG;
    case Errc::kInvalid: return EINVAL;
    case Errc::kCorrupt: return EUCLEAN;
    case Errc::kIo: return EIO;
    case Errc::kPerm: return EPERM;
    case Errc::kTooManyLinks: return EMLINK;
    case Errc::kNoData: return ENODATA;
    case Errc::kRange: return ERANGE;
    case Errc::kTooBig: return E2BIG;
    case Errc::kFileTooBig: return EFBIG;
    case Errc::kReadOnly: return EROFS;
    case Errc::kNotSupported: return EOPNOTSUPP;
    case Errc::kBusy: return EBUSY;
    case Errc::kCrossDevice: return EXDEV;
    case Errc::kAccess: return EACCES;
    case Errc::kNoOffset: return ENXIO;
  }
  return EIO;
}

}  // namespace pmemfuse::daemon
