// fs/xattr.cc: packing xattrs into the inline area and the xattr block.
#include "fs/xattr.h"

#include <cstring>

#include "fs/verify.h"

namespace pmemfuse::fs {
namespace {

void parse(const uint8_t* p, uint32_t len, std::vector<Xattr>* out) {
  for (uint32_t off = 0; off < len;) {
    DiskXattrEntry e;
    std::memcpy(&e, p + off, sizeof e);
    const char* s = reinterpret_cast<const char*>(p + off + sizeof e);
    out->push_back({std::string(s, e.name_len), std::string(s + e.name_len, e.value_len)});
    off += sizeof e + e.name_len + e.value_len;
  }
}

uint32_t emit(uint8_t* p, const Xattr& x) {
  DiskXattrEntry e{uint8_t(x.name.size()), 0, uint16_t(x.value.size())};
  std::memcpy(p, &e, sizeof e);
  std::memcpy(p + sizeof e, x.name.data(), x.name.size());
  std::memcpy(p + sizeof e + x.name.size(), x.value.data(), x.value.size());
  return xattr_entry_size(x);
}

}  // namespace

Result<std::vector<Xattr>> load_xattrs(const mm::Region& region, uint64_t ino, const DiskInode& d) {
  std::vector<Xattr> out;
  PF_CHECK(verify_xattr_entries(d.xattr_inline, d.xattr_inline_len, ino, "inline"));
  parse(d.xattr_inline, d.xattr_inline_len, &out);
  if (d.xattr_block) {
    const uint8_t* blk = region.at(d.xattr_block * kBlockSize);
    PF_CHECK(verify_xattr_block(blk, d.xattr_block, ino));
    DiskXattrHeader h;
    std::memcpy(&h, blk, sizeof h);
    parse(blk + sizeof h, h.used, &out);
  }
  return out;
}

Status store_xattrs(Tx& tx, Space& space, uint64_t ino, DiskInode& d, const std::vector<Xattr>& xs) {
  std::vector<const Xattr*> out_of_line;
  uint32_t inline_used = 0, block_used = 0;
  uint8_t inl[kInlineXattrBytes] = {};
  for (const Xattr& x : xs) {
    uint32_t n = xattr_entry_size(x);
    if (out_of_line.empty() && inline_used + n <= kInlineXattrBytes) {
      inline_used += emit(inl + inline_used, x);
    } else {
      out_of_line.push_back(&x);
      block_used += n;
    }
  }
  if (block_used > kXattrBlockBytes) {
    return make_error(Errc::kNoSpace, "inode " + std::to_string(ino) + ": xattrs need " +
                                          std::to_string(block_used) + " bytes out of line, the block holds " +
                                          std::to_string(kXattrBlockBytes));
  }
  if (!out_of_line.empty() && d.xattr_block == 0) {
    PF_TRY(runs, space.alloc(tx, 1, 0));
    d.xattr_block = runs[0].start;
    d.blocks += 1;
  } else if (out_of_line.empty() && d.xattr_block != 0) {
    space.free(tx, {d.xattr_block, 1});
    d.xattr_block = 0;
    d.blocks -= 1;
  }
  std::memcpy(d.xattr_inline, inl, sizeof inl);
  d.xattr_inline_len = uint16_t(inline_used);
  if (d.xattr_block) {
    uint8_t* blk = tx.stage(d.xattr_block);
    std::memset(blk, 0, kBlockSize);
    DiskXattrHeader h{kXattrMagic, 0, ino, block_used, uint32_t(out_of_line.size()), 0};
    std::memcpy(blk, &h, sizeof h);
    uint32_t off = sizeof h;
    for (const Xattr* x : out_of_line) off += emit(blk + off, *x);
    seal_block(blk);
  }
  return {};
}

}  // namespace pmemfuse::fs
