// fs/dir.cc: directory records, the hash index and stable positions.
#include "fs/dir.h"

#include <cstring>
#include <string>

#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

constexpr uint32_t kMaxRec = dirent_size(kMaxNameLen);

DiskDirent rec_at(const uint8_t* blk, uint32_t off) {
  DiskDirent e;
  std::memcpy(&e, blk + off, sizeof e);
  return e;
}

void put_rec(uint8_t* blk, uint32_t off, const DiskDirent& e) { std::memcpy(blk + off, &e, sizeof e); }

uint32_t room(const DiskDirent& e) {
  return e.ino == 0 ? e.rec_len : e.rec_len - dirent_size(e.name_len);
}

uint16_t largest_room(const uint8_t* blk) {
  uint32_t best = 0;
  for (uint32_t off = sizeof(DiskDirHeader); off < kBlockSize;) {
    DiskDirent e = rec_at(blk, off);
    best = std::max(best, room(e));
    off += e.rec_len;
  }
  return uint16_t(best);
}

std::string_view name_at(const uint8_t* blk, uint32_t off) {
  DiskDirent e = rec_at(blk, off);
  return {reinterpret_cast<const char*>(blk + off + sizeof e), e.name_len};
}

}  // namespace

uint64_t Directory::hash(std::string_view name) { return std::hash<std::string_view>{}(name); }

uint64_t Directory::pblk(const ExtentMap& map, uint64_t lblk) {
  const Extent* e = map.find(lblk);
  return e->pblk + (lblk - e->lblk);
}

void Directory::account(uint64_t lblk, const uint8_t* blk) {
  max_free_[lblk] = largest_room(blk);
  if (max_free_[lblk] >= kMaxRec) roomy_.insert(lblk);
  else roomy_.erase(lblk);
}

Result<std::unique_ptr<Directory>> Directory::load(const mm::Region& region, uint64_t ino,
                                                   const ExtentMap& map, uint64_t nblocks) {
  auto d = std::make_unique<Directory>();
  // Grown block by block: nblocks comes from the inode's size, which may be damaged.
  for (uint64_t lb = 0; lb < nblocks; lb++) {
    const Extent* e = map.find(lb);
    if (!e || e->lblk > lb || e->unwritten) {
      return corrupt("directory inode " + std::to_string(ino) + ": block " + std::to_string(lb) + " is not mapped");
    }
    uint64_t pb = e->pblk + (lb - e->lblk);
    const uint8_t* blk = region.at(pb * kBlockSize);
    PF_CHECK(verify_dir_block(blk, pb, ino, lb));
    for (uint32_t off = sizeof(DiskDirHeader); off < kBlockSize;) {
      DiskDirent r = rec_at(blk, off);
      if (r.ino != 0) d->by_hash_.emplace(hash(name_at(blk, off)), lb * kBlockSize + off);
      off += r.rec_len;
    }
    d->max_free_.push_back(0);
    d->account(lb, blk);
  }
  return d;
}

std::optional<DirEntry> Directory::find(const mm::Region& region, const ExtentMap& map,
                                        std::string_view name) const {
  auto [lo, hi] = by_hash_.equal_range(hash(name));
  for (auto it = lo; it != hi; ++it) {
    uint64_t pos = it->second;
    const uint8_t* blk = region.at(pblk(map, pos / kBlockSize) * kBlockSize);
    uint32_t off = uint32_t(pos % kBlockSize);
    if (name_at(blk, off) == name) {
      DiskDirent r = rec_at(blk, off);
      return DirEntry{r.ino, r.type, pos};
    }
  }
  return std::nullopt;
}

Status Directory::add(Tx& tx, Space& space, uint64_t dir_ino, DiskInode& d, ExtentMap& map,
                      std::string_view name, uint64_t ino, uint8_t type) {
  uint32_t need = dirent_size(uint32_t(name.size()));
  uint64_t lb;
  if (!roomy_.empty()) {
    lb = *roomy_.begin();
  } else {
    lb = max_free_.size();
    PF_TRY(runs, space.alloc(tx, 1, map.goal(lb)));
    auto removed = map.replace(tx, space, dir_ino, d, lb, lb + 1, {{lb, 1, runs[0].start, false}});
    if (!removed) return std::move(removed.error());
    init_block(tx.stage(runs[0].start), dir_ino, lb);
    d.size += kBlockSize;
    d.blocks += 1;
    max_free_.push_back(0);
  }
  uint8_t* blk = tx.stage(pblk(map, lb));
  uint32_t off = sizeof(DiskDirHeader);
  DiskDirent host = rec_at(blk, off);
  while (room(host) < need) {
    // The block was verified at load and roomy_ said it has room: only a change of the
    // media under the mount gets here, and it must not spin.
    if (host.rec_len == 0 || off + host.rec_len >= kBlockSize) {
      return make_error(Errc::kCorrupt, "directory " + std::to_string(dir_ino) + " block " +
                                            std::to_string(lb) + " changed under the mount");
    }
    off += host.rec_len;
    host = rec_at(blk, off);
  }
  DiskDirent fresh{ino, 0, uint8_t(name.size()), type};
  if (host.ino == 0) {
    fresh.rec_len = host.rec_len;
  } else {
    uint16_t used = uint16_t(dirent_size(host.name_len));
    fresh.rec_len = uint16_t(host.rec_len - used);
    host.rec_len = used;
    put_rec(blk, off, host);
    off += used;
  }
  put_rec(blk, off, fresh);
  std::memcpy(blk + off + sizeof fresh, name.data(), name.size());
  seal_block(blk);
  by_hash_.emplace(hash(name), lb * kBlockSize + off);
  account(lb, blk);
  return {};
}

void Directory::init_block(uint8_t* blk, uint64_t owner, uint64_t lblk) {
  std::memset(blk, 0, kBlockSize);
  DiskDirHeader h{kDirMagic, 0, owner, lblk, 0};
  std::memcpy(blk, &h, sizeof h);
  put_rec(blk, sizeof h, {0, uint16_t(kBlockSize - sizeof h), 0, 0});
}

void Directory::remove(Tx& tx, const ExtentMap& map, const DirEntry& e, std::string_view name) {
  uint64_t lb = e.pos / kBlockSize;
  uint32_t target = uint32_t(e.pos % kBlockSize);
  uint8_t* blk = tx.stage(pblk(map, lb));
  uint32_t prev = 0;
  for (uint32_t off = sizeof(DiskDirHeader); off != target;) {
    prev = off;
    off += rec_at(blk, off).rec_len;
  }
  DiskDirent r = rec_at(blk, target);
  if (prev) {
    DiskDirent p = rec_at(blk, prev);
    p.rec_len = uint16_t(p.rec_len + r.rec_len);
    put_rec(blk, prev, p);
  } else {
    put_rec(blk, target, {0, r.rec_len, 0, 0});
  }
  seal_block(blk);
  auto [lo, hi] = by_hash_.equal_range(hash(name));
  for (auto it = lo; it != hi; ++it) {
    if (it->second == e.pos) {
      by_hash_.erase(it);
      break;
    }
  }
  account(lb, blk);
}

void Directory::retarget(Tx& tx, const ExtentMap& map, const DirEntry& e, uint64_t ino,
                         uint8_t type) {
  uint8_t* blk = tx.stage(pblk(map, e.pos / kBlockSize));
  uint32_t off = uint32_t(e.pos % kBlockSize);
  DiskDirent r = rec_at(blk, off);
  r.ino = ino;
  r.type = type;
  put_rec(blk, off, r);
  seal_block(blk);
}

void Directory::list(const mm::Region& region, const ExtentMap& map, uint64_t from,
                     const std::function<bool(std::string_view, const DirEntry&, uint64_t)>& fn) const {
  for (uint64_t lb = from / kBlockSize; lb < max_free_.size(); lb++) {
    const uint8_t* blk = region.at(pblk(map, lb) * kBlockSize);
    for (uint32_t off = sizeof(DiskDirHeader); off < kBlockSize;) {
      DiskDirent r = rec_at(blk, off);
      uint64_t pos = lb * kBlockSize + off;
      if (r.ino != 0 && pos >= from) {
        if (!fn(name_at(blk, off), DirEntry{r.ino, r.type, pos}, pos + 1)) return;
      }
      off += r.rec_len;
    }
  }
}

}  // namespace pmemfuse::fs
