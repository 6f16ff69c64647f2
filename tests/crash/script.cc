// tests/crash/script.cc: the path-based operations workloads are written in. Every call
// that hands out a kernel reference is followed by the forget the kernel would send, so
// inodes leave the cache (and unlinked ones are reclaimed) as on a real mount.
#include <sys/stat.h>

#include "tests/crash/explorer.h"

namespace pmemfuse::crash {
namespace {

const fs::Caller kCaller{0, 0, 022};

Status adopt(fs::Filesystem& fs, Result<fs::Attr> a) {
  if (!a) return a.error();
  fs.forget(a->ino, 1);
  return {};
}

template <typename T>
Status status_of(const Result<T>& r) {
  if (!r) return r.error();
  return {};
}

}  // namespace

Result<uint64_t> Script::resolve(const std::string& path) {
  uint64_t ino = 1;
  size_t pos = 1;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    PF_TRY(a, fs_->lookup(ino, std::string_view(path).substr(pos, end - pos)));
    fs_->forget(a.ino, 1);
    ino = a.ino;
    pos = end + 1;
  }
  return ino;
}

Result<std::pair<uint64_t, std::string>> Script::parent_of(const std::string& path) {
  size_t slash = path.rfind('/');
  PF_TRY(dir, resolve(path.substr(0, slash)));
  return std::make_pair(dir, path.substr(slash + 1));
}

std::string Script::content(const std::string& path) {
  auto ino = resolve(path);
  if (!ino) return {};
  auto a = fs_->getattr(*ino);
  if (!a) return {};
  auto data = file_data(*fs_, *ino, a->size);
  return data ? *data : std::string();
}

void Script::step(const std::string& name, const std::function<Status()>& fn, const std::string& data_path) {
  if (!failed_.ok()) return;
  if (!grouping_ && before_step) before_step(data_path);
  Status s = fn();
  if (!s.ok()) {
    failed_ = make_error(s.error().code, name + ": " + s.error().msg);
    return;
  }
  if (!grouping_ && after_step) after_step(name, data_path);
}

void Script::group(const std::string& name, const std::function<void()>& fn, const std::string& data_path) {
  step(name, [&]() -> Status {
    grouping_ = true;
    fn();
    grouping_ = false;
    return failed_;
  }, data_path);
}

void Script::mkdir(const std::string& path) {
  step("mkdir " + path, [&]() -> Status {
    PF_TRY(p, parent_of(path));
    return adopt(*fs_, fs_->mkdir(p.first, p.second, 0755, kCaller));
  });
}

void Script::create(const std::string& path) {
  step("create " + path, [&]() -> Status {
    PF_TRY(p, parent_of(path));
    return adopt(*fs_, fs_->mknod(p.first, p.second, S_IFREG | 0644, 0, kCaller));
  });
}

void Script::symlink(const std::string& target, const std::string& path) {
  step("symlink " + path, [&]() -> Status {
    PF_TRY(p, parent_of(path));
    return adopt(*fs_, fs_->symlink(p.first, p.second, target, kCaller));
  });
}

void Script::link(const std::string& from, const std::string& to) {
  step("link " + from + " " + to, [&]() -> Status {
    PF_TRY(ino, resolve(from));
    PF_TRY(p, parent_of(to));
    return adopt(*fs_, fs_->link(ino, p.first, p.second));
  });
}

void Script::unlink(const std::string& path) {
  step("unlink " + path, [&]() -> Status {
    PF_TRY(p, parent_of(path));
    return fs_->unlink(p.first, p.second);
  });
}

void Script::rmdir(const std::string& path) {
  step("rmdir " + path, [&]() -> Status {
    PF_TRY(p, parent_of(path));
    return fs_->rmdir(p.first, p.second);
  });
}

void Script::rename(const std::string& from, const std::string& to, uint32_t flags) {
  step("rename " + from + " " + to + " flags=" + std::to_string(flags), [&]() -> Status {
    PF_TRY(a, parent_of(from));
    PF_TRY(b, parent_of(to));
    return fs_->rename(a.first, a.second, b.first, b.second, flags);
  });
}

void Script::write(const std::string& path, uint64_t off, const std::string& data) {
  step("write " + path + " @" + std::to_string(off) + "+" + std::to_string(data.size()), [&]() -> Status {
    PF_TRY(ino, resolve(path));
    PF_TRY(n, fs_->write(ino, off, data.data(), data.size()));
    if (n != data.size()) return make_error(Errc::kNoSpace, "short write");
    return {};
  }, path);
}

void Script::truncate(const std::string& path, uint64_t size) {
  step("truncate " + path + " " + std::to_string(size), [&]() -> Status {
    PF_TRY(ino, resolve(path));
    fs::SetAttr s;
    s.size = size;
    return status_of(fs_->setattr(ino, s));
  });
}

void Script::fallocate(const std::string& path, uint32_t mode, uint64_t off, uint64_t len) {
  step("fallocate " + path + " mode=" + std::to_string(mode) + " @" + std::to_string(off) + "+" + std::to_string(len),
       [&]() -> Status {
         PF_TRY(ino, resolve(path));
         return fs_->fallocate(ino, mode, off, len);
       }, path);
}

void Script::setxattr(const std::string& path, const std::string& name, const std::string& value,
                      fs::XattrFlags f) {
  step("setxattr " + path + " " + name + " (" + std::to_string(value.size()) + " bytes)", [&]() -> Status {
    PF_TRY(ino, resolve(path));
    return fs_->setxattr(ino, name, value, f);
  });
}

void Script::removexattr(const std::string& path, const std::string& name) {
  step("removexattr " + path + " " + name, [&]() -> Status {
    PF_TRY(ino, resolve(path));
    return fs_->removexattr(ino, name);
  });
}

void Script::chmod(const std::string& path, uint32_t mode) {
  step("chmod " + path, [&]() -> Status {
    PF_TRY(ino, resolve(path));
    fs::SetAttr s;
    s.mode = mode;
    return status_of(fs_->setattr(ino, s));
  });
}

void Script::fsync(const std::string& path) {
  step("fsync " + path, [&]() -> Status {
    PF_TRY(ino, resolve(path));
    return fs_->fsync(ino, false);
  });
}

void Script::set_dax(const std::string& path, bool on) {
  step(std::string(on ? "set" : "clear") + " the DAX flag of " + path, [&]() -> Status {
    PF_TRY(ino, resolve(path));
    return status_of(fs_->set_dax(ino, on));
  });
}

void Script::open(const std::string& path) {
  step("open " + path, [&]() -> Status {
    PF_TRY(ino, resolve(path));
    PF_CHECK(fs_->open(ino));
    open_[path] = ino;
    return {};
  });
}

void Script::release(const std::string& path) {
  step("release " + path, [&]() -> Status {
    auto it = open_.find(path);
    if (it == open_.end()) return make_error(Errc::kInvalid, "not open");
    fs_->release(it->second);
    open_.erase(it);
    return {};
  });
}

}  // namespace pmemfuse::crash
