// fs/itable.h: the inode table. Chunks of kChunkBlocks blocks, listed in the index block;
// each chunk's first block is its slot bitmap. A slot freed by a transaction becomes
// reusable only after that transaction commits. Grows by one chunk at a time (its own
// transaction). Thread-safe (mu_, taken after inode locks and before the journal).
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "fs/format.h"
#include "fs/journal.h"
#include "fs/space.h"

namespace pmemfuse::fs {

class InodeTable {
 public:
  InodeTable(mm::Region& region, Space& space, Journal& journal, const DiskSuper& sb);
  // Verifies the index and every chunk bitmap; counts free slots.
  Status load();

  bool valid(uint64_t ino) const;
  uint64_t offset(uint64_t ino) const;  // byte offset of the inode on media; valid(ino)
  bool in_use(uint64_t ino) const;      // the slot bitmap says allocated
  // A verified copy of an in-use inode.
  Result<DiskInode> read(uint64_t ino) const;
  // Seals d and records it in tx.
  void write(Tx& tx, uint64_t ino, DiskInode& d) const;
  // Reserves a free slot (growing the table if needed) and marks it used in tx. Returns
  // the inode number and the generation the new inode must carry.
  Result<std::pair<uint64_t, uint32_t>> alloc(Tx& tx);
  // Marks the slot free in tx; reusable once tx commits. The caller writes the cleared inode.
  void free(Tx& tx, uint64_t ino);

  uint64_t used() const;
  uint64_t capacity() const;  // slots in allocated chunks
  uint32_t nchunks() const;
  uint64_t chunk_block(uint32_t i) const;

 private:
  struct Chunk {
    uint64_t bno;
    std::vector<uint64_t> used;  // slot bitmap mirror
    uint32_t nused = 0;
  };
  Status grow_locked();
  bool take_slot_locked(uint64_t* ino);

  mm::Region& region_;
  Space& space_;
  Journal& journal_;
  uint64_t index_bno_;
  uint64_t block_count_;
  mutable std::mutex mu_;
  std::vector<Chunk> chunks_;  // guarded by mu_
  uint64_t used_ = 0;          // guarded by mu_
  uint32_t hint_ = 0;          // guarded by mu_: first chunk that may have a free slot
};

}  // namespace pmemfuse::fs
