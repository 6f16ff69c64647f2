// fs/bmap.cc: extent lookup, range replacement, inline/chain storage.
#include "fs/bmap.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

Extent from_disk(const DiskExtent& e) {
  return {e.lblk, e.len_flags & kExtentMaxLen, e.pblk, (e.len_flags & kExtentUnwritten) != 0};
}

DiskExtent to_disk(const Extent& e) {
  return {uint32_t(e.lblk), uint32_t(e.len) | (e.unwritten ? kExtentUnwritten : 0), e.pblk};
}

bool mergeable(const Extent& a, const Extent& b) {
  return a.end() == b.lblk && a.pblk + a.len == b.pblk && a.unwritten == b.unwritten &&
         a.len + b.len <= kExtentMaxLen;
}

size_t leaves_for(size_t n) { return (n + kLeafExtents - 1) / kLeafExtents; }

}  // namespace

Result<ExtentMap> ExtentMap::load(const mm::Region& region, uint64_t ino, const DiskInode& d,
                                  uint64_t block_count) {
  ExtentMap m;
  if (d.flags & kInodeInlineData) return m;
  if (!(d.flags & kInodeChained)) {
    for (uint32_t i = 0; i < d.nextents; i++) {
      Extent e = from_disk(d.map.extents[i]);
      m.ext_[e.lblk] = e;
    }
    return m;
  }
  uint64_t bno = d.map.chain.head;
  uint64_t prev_end = 0;
  while (bno != 0) {
    if (m.leaves_.size() >= d.map.chain.nleaves) {
      return corrupt("inode " + std::to_string(ino) + ": extent chain longer than nleaves " +
                     std::to_string(d.map.chain.nleaves));
    }
    const uint8_t* blk = region.at(bno * kBlockSize);
    PF_CHECK(verify_leaf(blk, bno, ino, block_count));
    DiskExtentLeaf l;
    std::memcpy(&l, blk, sizeof l);
    m.leaf_key_.push_back(m.leaves_.empty() ? 0 : l.extents[0].lblk);
    m.leaves_.push_back(bno);
    m.leaf_count_.push_back(l.count);
    for (uint32_t i = 0; i < l.count; i++) {
      Extent e = from_disk(l.extents[i]);
      if (e.lblk < prev_end) {
        return corrupt("inode " + std::to_string(ino) + ": extent leaf " + std::to_string(bno) +
                       " overlaps the previous leaf");
      }
      prev_end = e.end();
      m.ext_[e.lblk] = e;
    }
    bno = l.next;
  }
  if (m.leaves_.size() != d.map.chain.nleaves) {
    return corrupt("inode " + std::to_string(ino) + ": extent chain has " +
                   std::to_string(m.leaves_.size()) + " leaves, nleaves says " +
                   std::to_string(d.map.chain.nleaves));
  }
  return m;
}

const Extent* ExtentMap::find(uint64_t lblk) const {
  auto it = ext_.upper_bound(lblk);
  if (it != ext_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end() > lblk) return &prev->second;
  }
  return it == ext_.end() ? nullptr : &it->second;
}

uint64_t ExtentMap::goal(uint64_t lblk) const {
  auto it = ext_.upper_bound(lblk);
  if (it == ext_.begin()) return 0;
  const Extent& e = std::prev(it)->second;
  return e.pblk + e.len;
}

ExtentMap::Window ExtentMap::plan(uint64_t lo, uint64_t hi, std::vector<Extent> add) const {
  Window w;
  auto it = ext_.lower_bound(lo);
  if (it != ext_.begin()) --it;  // the extent before lo may be cut or merged
  for (; it != ext_.end() && it->first <= hi; ++it) {
    const Extent& e = it->second;
    w.old_keys.push_back(e.lblk);
    uint64_t s = std::max(e.lblk, lo), t = std::min(e.end(), hi);
    if (s < t) w.removed.push_back({e.pblk + (s - e.lblk), t - s});
    if (e.lblk < lo) w.fresh.push_back({e.lblk, std::min(e.end(), lo) - e.lblk, e.pblk, e.unwritten});
    if (e.end() > hi) {
      uint64_t from = std::max(e.lblk, hi);
      w.fresh.push_back({from, e.end() - from, e.pblk + (from - e.lblk), e.unwritten});
    }
  }
  for (Extent& e : add) w.fresh.push_back(e);
  std::sort(w.fresh.begin(), w.fresh.end(),
            [](const Extent& a, const Extent& b) { return a.lblk < b.lblk; });
  std::vector<Extent> merged;
  for (const Extent& e : w.fresh) {
    if (!merged.empty() && mergeable(merged.back(), e)) merged.back().len += e.len;
    else merged.push_back(e);
  }
  w.fresh = std::move(merged);
  return w;
}

Result<std::vector<mm::Run>> ExtentMap::replace(Tx& tx, Space& space, uint64_t ino,
                                                DiskInode& d, uint64_t lo, uint64_t hi,
                                                std::vector<Extent> add) {
  Window w = plan(lo, hi, std::move(add));
  size_t total = ext_.size() - w.old_keys.size() + w.fresh.size();
  uint64_t a = w.old_keys.empty() ? lo : std::min(lo, w.old_keys.front());
  // Decide the storage and reserve leaf blocks before anything changes.
  size_t i_lo = 0, i_hi = 0, p = 0, q = 0;
  bool chain = total > kInlineExtents, partial = chain && !leaves_.empty();
  if (partial) {
    i_lo = std::upper_bound(leaf_key_.begin(), leaf_key_.end(), a) - leaf_key_.begin() - 1;
    i_hi = std::upper_bound(leaf_key_.begin(), leaf_key_.end(), hi) - leaf_key_.begin() - 1;
    size_t m = w.fresh.size() - w.old_keys.size();
    for (size_t i = i_lo; i <= i_hi; i++) m += leaf_count_[i];
    p = leaves_for(m);
    q = i_hi - i_lo + 1;
  } else if (chain) {
    p = leaves_for(total);
  }
  std::vector<uint64_t> fresh_blocks;
  if (p > q) {
    PF_TRY(runs, space.alloc(tx, p - q, leaves_.empty() ? 0 : leaves_.back()));
    for (const mm::Run& r : runs)
      for (uint64_t b = 0; b < r.len; b++) fresh_blocks.push_back(r.start + b);
  }
  for (uint64_t k : w.old_keys) ext_.erase(k);
  for (const Extent& e : w.fresh) ext_[e.lblk] = e;
  if (!chain) store_inline(tx, space, d);
  else if (!partial) build_chain(tx, ino, d, fresh_blocks);
  else repack(tx, space, ino, d, i_lo, i_hi, std::move(fresh_blocks), p);
  return std::move(w.removed);
}

void ExtentMap::store_inline(Tx& tx, Space& space, DiskInode& d) {
  for (uint64_t b : leaves_) space.free(tx, {b, 1});
  d.blocks -= leaves_.size();
  leaves_.clear();
  leaf_key_.clear();
  leaf_count_.clear();
  d.flags &= ~kInodeChained;
  std::memset(&d.map, 0, sizeof d.map);
  d.nextents = uint16_t(ext_.size());
  size_t i = 0;
  for (auto& [k, e] : ext_) d.map.extents[i++] = to_disk(e);
}

void ExtentMap::write_leaf(Tx& tx, uint64_t bno, uint64_t ino, uint64_t next,
                           const std::vector<Extent>& e, size_t from, size_t n) {
  DiskExtentLeaf l{};
  l.magic = kLeafMagic;
  l.owner = ino;
  l.next = next;
  l.count = uint32_t(n);
  for (size_t i = 0; i < n; i++) l.extents[i] = to_disk(e[from + i]);
  uint8_t* b = tx.stage(bno);
  std::memcpy(b, &l, sizeof l);
  seal_block(b);
}

void ExtentMap::build_chain(Tx& tx, uint64_t ino, DiskInode& d,
                            const std::vector<uint64_t>& blocks) {
  std::vector<Extent> all;
  for (auto& [k, e] : ext_) all.push_back(e);
  size_t p = blocks.size(), from = 0;
  leaves_ = blocks;
  leaf_key_.clear();
  leaf_count_.clear();
  for (size_t j = 0; j < p; j++) {
    size_t n = all.size() / p + (j < all.size() % p ? 1 : 0);
    write_leaf(tx, blocks[j], ino, j + 1 < p ? blocks[j + 1] : 0, all, from, n);
    leaf_key_.push_back(j == 0 ? 0 : all[from].lblk);
    leaf_count_.push_back(uint32_t(n));
    from += n;
  }
  d.flags |= kInodeChained;
  std::memset(&d.map, 0, sizeof d.map);
  d.map.chain.head = blocks[0];
  d.map.chain.nleaves = p;
  d.nextents = 0;
  d.blocks += p;
}

void ExtentMap::repack(Tx& tx, Space& space, uint64_t ino, DiskInode& d, size_t i_lo,
                       size_t i_hi, std::vector<uint64_t> fresh_blocks, size_t p) {
  uint64_t key_lo = leaf_key_[i_lo];
  bool has_next = i_hi + 1 < leaves_.size();
  uint64_t successor = has_next ? leaves_[i_hi + 1] : 0;
  std::vector<Extent> span;
  for (auto it = ext_.lower_bound(key_lo);
       it != ext_.end() && (!has_next || it->first < leaf_key_[i_hi + 1]); ++it) {
    span.push_back(it->second);
  }
  std::vector<uint64_t> blocks(leaves_.begin() + i_lo, leaves_.begin() + i_hi + 1);
  blocks.insert(blocks.end(), fresh_blocks.begin(), fresh_blocks.end());
  for (size_t j = p; j < blocks.size(); j++) space.free(tx, {blocks[j], 1});
  d.blocks = d.blocks + p - (i_hi - i_lo + 1);
  blocks.resize(p);
  std::vector<uint64_t> keys;
  std::vector<uint32_t> counts;
  size_t from = 0;
  for (size_t j = 0; j < p; j++) {
    size_t n = span.size() / p + (j < span.size() % p ? 1 : 0);
    write_leaf(tx, blocks[j], ino, j + 1 < p ? blocks[j + 1] : successor, span, from, n);
    keys.push_back(j == 0 ? key_lo : span[from].lblk);
    counts.push_back(uint32_t(n));
    from += n;
  }
  if (p == 0) {
    // The range's leaves are gone: link around them.
    if (i_lo == 0) {
      d.map.chain.head = successor;
      if (has_next) leaf_key_[i_hi + 1] = 0;
    } else {
      std::vector<Extent> prev;
      DiskExtentLeaf l;
      std::memcpy(&l, tx.stage(leaves_[i_lo - 1]), sizeof l);
      for (uint32_t i = 0; i < l.count; i++) prev.push_back(from_disk(l.extents[i]));
      write_leaf(tx, leaves_[i_lo - 1], ino, successor, prev, 0, prev.size());
    }
  }
  leaves_.erase(leaves_.begin() + i_lo, leaves_.begin() + i_hi + 1);
  leaf_key_.erase(leaf_key_.begin() + i_lo, leaf_key_.begin() + i_hi + 1);
  leaf_count_.erase(leaf_count_.begin() + i_lo, leaf_count_.begin() + i_hi + 1);
  leaves_.insert(leaves_.begin() + i_lo, blocks.begin(), blocks.end());
  leaf_key_.insert(leaf_key_.begin() + i_lo, keys.begin(), keys.end());
  leaf_count_.insert(leaf_count_.begin() + i_lo, counts.begin(), counts.end());
  d.map.chain.head = leaves_.front();
  d.map.chain.nleaves = leaves_.size();
}

}  // namespace pmemfuse::fs
