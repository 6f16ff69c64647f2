// fs/dax.cc: the DAX data path. A file's path is chosen by its DAX flag and the mount's
// dax= mode; DAX reads hand out pointers into pmem (through a DAX window where one can
// show the range contiguously), and DAX writes are the plain path's stores to pmem, durable
// when they return (data.cc). Toggling moves a file between the paths with no I/O in
// flight: its io_mu is held exclusively.
#include <sys/stat.h>

#include <algorithm>

#include "fs/filesystem.h"

namespace pmemfuse::fs {
namespace {

constexpr uint64_t kSlot = mm::DaxWindows::kSlotSize;
// Each run is a mapping of its own: a cap per slot keeps a full window's mappings at half
// the process limit (vm.max_map_count, 65530 by default), and at most 64 per slot.
size_t max_runs_per_slot(const mm::DaxWindows& w) {
  return std::clamp<size_t>(32768 / std::max<size_t>(w.slot_count(), 1), 1, 64);
}

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

}  // namespace

bool Filesystem::dax_for(const DiskInode& d) const {
  if (!S_ISREG(d.mode) || opts_.dax == DaxMode::kNever) return false;
  return opts_.dax == DaxMode::kAlways || (d.flags & kInodeDax);
}

Result<DaxState> Filesystem::dax_state(uint64_t ino) {
  PF_TRY(i, get(ino));
  std::shared_lock lk(i->mu);
  DaxState s;
  s.flag = i->d.flags & kInodeDax;
  if (S_ISREG(i->d.mode)) s.effective = i->dax;
  else if (S_ISDIR(i->d.mode)) s.effective = opts_.dax == DaxMode::kAlways || (opts_.dax == DaxMode::kInode && s.flag);
  return s;
}

Result<bool> Filesystem::set_dax(uint64_t ino, bool on) {
  PF_CHECK(writable());
  PF_TRY(i, get(ino));
  std::unique_lock io(i->io_mu);  // no read or write in flight from here on
  DiskInode d;
  {
    std::shared_lock lk(i->mu);
    d = i->d;
  }
  if (!S_ISREG(d.mode) && !S_ISDIR(d.mode)) {
    return make_error(Errc::kInvalid, "inode " + std::to_string(ino) + ": DAX applies to regular files and directories");
  }
  d.flags = on ? d.flags | kInodeDax : d.flags & ~kInodeDax;
  bool dax = dax_for(d), changed = dax != i->dax;
  if (changed) PF_CHECK(switch_path(*i, dax));
  std::unique_lock lk(i->mu);
  if (bool(i->d.flags & kInodeDax) != on) {
    i->d.flags ^= kInodeDax;
    i->d.ctime_ns = now();
    Tx tx(region_);
    write_inode(tx, *i);
    PF_CHECK(commit(tx));
  }
  i->dax = dax;
  return changed;
}

// Leaves the old path with nothing behind: to DAX, the file's cached pages go to pmem and
// out of DRAM (writes after this go straight to pmem, past them); to buffered, the file's
// windows are unmapped. Caller holds i.io_mu exclusively.
Status Filesystem::switch_path(Inode& i, bool dax) {
  if (!dax) {
    drop_windows(i.ino, 0, UINT64_MAX);
    return {};
  }
  auto f = cache_ ? cache_->find(i.ino) : nullptr;
  if (!f) return {};
  PF_CHECK(flush_file(*f));
  space_->unreserve(cache_->discard(i.ino));  // nothing reserved is left after the flush
  return {};
}

// Each 2 MiB chunk of the range is read through a window when the chunk's extents allow
// one (written blocks up to EOF), else piece by piece from the main mapping. The views
// stay referenced until sink has sent the reply.
Status Filesystem::read_dax(Inode& i, uint64_t off, uint64_t size,
                            const std::function<void(const struct iovec*, int)>& sink) {
  std::shared_lock lk(i.mu);
  if (!windows_) return read_media(i, off, size, sink);
  uint64_t end = std::min(i.d.size, off + size);
  std::vector<struct iovec> iov;
  std::vector<mm::DaxWindows::View> views;
  const size_t max_runs = max_runs_per_slot(*windows_);
  auto runs = [&](uint64_t from, uint64_t len, std::vector<mm::DevRun>* out) {
    for (uint64_t pos = from; pos < from + len;) {
      const Extent* e = i.map.find(pos / kBlockSize);
      if (!e || e->lblk > pos / kBlockSize || e->unwritten || out->size() == max_runs) return false;
      uint64_t stop = std::min(from + len, e->end() * kBlockSize);
      out->push_back({pos, e->pblk * kBlockSize + (pos - e->lblk * kBlockSize), stop - pos});
      pos = stop;
    }
    return true;
  };
  for (uint64_t pos = off; pos < end;) {
    uint64_t chunk = pos / kSlot, base = chunk * kSlot, stop = std::min(end, base + kSlot);
    // The whole chunk up to EOF, so appends within it do not remap at every read.
    uint64_t need = std::min(kSlot, round_up(i.d.size, kBlockSize) - base);
    auto v = windows_->get(i.ino, chunk, need, runs);
    if (v) {
      iov.push_back({v->data() + (pos - base), stop - pos});
      views.push_back(std::move(*v));
    } else {
      media_iov(i, pos, stop, &iov);
    }
    pos = stop;
  }
  sink(iov.data(), int(iov.size()));
  return {};
}

void Filesystem::drop_windows(uint64_t ino, uint64_t from, uint64_t to) {
  if (windows_) windows_->invalidate(ino, from, to);
}

}  // namespace pmemfuse::fs
