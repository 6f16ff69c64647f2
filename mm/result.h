// mm/result.h: errors as values. Every layer below the daemon returns Result<T>; the
// daemon turns Errc into errno in exactly one place (daemon/errors.cc).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace pmemfuse {

enum class Errc : uint8_t {
  kNotFound,      // no such entry
  kExists,        // entry already exists
  kNotDir,        // a path component or target is not a directory
  kIsDir,         // operation not valid on a directory
  kNotEmpty,      // directory not empty
  kNoSpace,       // out of blocks or inodes
  kNameTooLong,   // name longer than kMaxNameLen
  kInvalid,       // bad argument
  kCorrupt,       // on-media structure failed verification (EUCLEAN)
  kIo,            // host I/O failed
  kPerm,          // operation not permitted
  kTooManyLinks,  // nlink limit reached
  kNoData,        // no such attribute
  kRange,         // caller's buffer too small
  kTooBig,        // value too large for the attribute store
  kFileTooBig,    // offset beyond the maximum file size
  kReadOnly,      // filesystem mounted read-only
  kNotSupported,  // feature not implemented or not applicable
  kBusy,          // resource busy
  kCrossDevice,   // link or rename across filesystems
  kAccess,        // permission denied
  kNoOffset,      // no data (or hole) at or after the offset
};

const char* errc_name(Errc c);

struct Error {
  Errc code;
  std::string msg;  // names the object and what failed: "inode 12: crc mismatch"
};

inline Error make_error(Errc c, std::string msg = {}) { return Error{c, std::move(msg)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::move(v)) {}  // NOLINT: implicit by design
  Result(Error e) : v_(std::move(e)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& operator*() { return std::get<0>(v_); }
  const T& operator*() const { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& value() { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }
  Error& error() { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : err_(std::move(e)), failed_(true) {}  // NOLINT
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }
  Error& error() { return err_; }

 private:
  Error err_{Errc::kInvalid, {}};
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace pmemfuse

// Early return on error. PF_TRY(v, expr) declares v from a Result<T>; PF_CHECK(expr)
// checks a Status.
#define PF_CAT2(a, b) a##b
#define PF_CAT(a, b) PF_CAT2(a, b)
#define PF_TRY(var, expr)                                   \
  auto PF_CAT(pf_r_, __LINE__) = (expr);                    \
  if (!PF_CAT(pf_r_, __LINE__)) return std::move(PF_CAT(pf_r_, __LINE__).error()); \
  auto var = std::move(*PF_CAT(pf_r_, __LINE__))
#define PF_CHECK(expr)                                      \
  do {                                                      \
    auto pf_s_ = (expr);                                    \
    if (!pf_s_) return std::move(pf_s_.error());            \
  } while (0)
