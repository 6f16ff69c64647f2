// fs/journal.h: metadata transactions and the redo journal.
//
// A Tx collects byte records, whole staged blocks and bitmap bit operations. commit()
// fences earlier stores (file data before the metadata that exposes it), appends the
// transaction to the circular log, fences (the commit point), applies the records in
// place and fences again; a crash at any point either replays the whole transaction or
// none of it. Checkpointing is lazy: the log head moves only when the log is full, and
// replay of already-applied transactions is harmless because records are idempotent and
// replayed in sequence order.
//
// Threading: Tx is owned by one thread. Journal::commit() is serialized by an internal
// mutex, which is taken after every other filesystem lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "fs/format.h"
#include "mm/region.h"
#include "mm/result.h"

namespace pmemfuse::fs {

class Tx {
 public:
  explicit Tx(mm::Region& region) : region_(region) {}
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;
  ~Tx();  // not committed: blocks allocated for it go back to the allocator

  // Records n bytes for media offset off.
  void write(uint64_t off, const void* src, uint32_t n);
  template <class T>
  void put(uint64_t off, const T& v) {
    write(off, &v, sizeof(T));
  }
  // A staging copy of block bno (from media, or this transaction's earlier stage),
  // written whole at commit. The caller reseals the block's crc after changing it. A
  // later write() into a staged block lands in the stage, so records keep their order.
  uint8_t* stage(uint64_t bno);
  bool staged(uint64_t bno) const { return staged_.count(bno) != 0; }
  // Bit operations on the bitmap whose first block is bitmap_bno.
  void set_bits(uint64_t bitmap_bno, uint64_t first, uint64_t count);
  void clear_bits(uint64_t bitmap_bno, uint64_t first, uint64_t count);

  // Runs once the transaction has committed (give freed blocks and slots back).
  void on_commit(std::function<void()> f) { on_commit_.push_back(std::move(f)); }
  // Freed blocks may hold metadata images that live in the log; replaying one over a
  // block reused for file data would destroy the data. A transaction that frees blocks
  // therefore moves the log head past itself before its on_commit callbacks run.
  void mark_frees_blocks() { frees_blocks_ = true; }
  // Runs if the transaction is dropped without committing (undo DRAM reservations).
  void on_abort(std::function<void()> f) { on_abort_.push_back(std::move(f)); }

  bool empty() const { return recs_.empty() && staged_.empty(); }
  size_t encoded_bytes() const;

 private:
  friend class Journal;
  struct Rec {
    uint64_t dest;
    RecKind kind;
    std::vector<uint8_t> data;
  };
  void on_committed();

  mm::Region& region_;
  std::vector<Rec> recs_;
  std::map<uint64_t, std::unique_ptr<uint8_t[]>> staged_;
  std::vector<std::function<void()>> on_commit_;
  std::vector<std::function<void()>> on_abort_;
  bool committed_ = false;
  bool frees_blocks_ = false;
};

struct JournalStats {
  uint64_t commits = 0;
  uint64_t checkpoints = 0;
  uint64_t replayed = 0;  // transactions replayed at open
  uint64_t bytes = 0;     // bytes appended to the log
};

class Journal {
 public:
  // Opens the journal at blocks [start, start + blocks) and replays committed
  // transactions. With replay = false (read-only checks) pending transactions are an error.
  static Result<std::unique_ptr<Journal>> open(mm::Region& region, uint64_t start,
                                               uint64_t blocks, bool replay);
  // Writes an empty journal (mkfs).
  static void format(mm::Region& region, uint64_t start, uint64_t blocks);

  // Makes tx durable and applies it. On return the transaction survives any crash.
  Status commit(Tx& tx);
  // Moves the log head to the tail: nothing is left to replay (clean unmount).
  void checkpoint();
  // Largest encoded transaction the log accepts.
  size_t max_tx_bytes() const { return log_bytes_ / 4; }
  JournalStats stats() const;
  // Transactions found committed but not yet checkpointed when the journal was opened.
  uint64_t pending_at_open() const { return pending_at_open_; }

 private:
  Journal(mm::Region& region, uint64_t start, uint64_t blocks);
  // The transaction with sequence number seq at lsn: its header, and its body in *body.
  // kEnd: none starts there; kBadCrc: one starts there but fails its crc.
  enum class TxRead { kValid, kEnd, kBadCrc };
  TxRead read_tx(uint64_t lsn, uint64_t seq, DiskTxHeader* th, std::vector<uint8_t>* body) const;
  Status recover(bool replay);
  void write_header_locked();
  void copy_out(uint64_t lsn, void* dst, size_t n) const;
  void copy_in(uint64_t lsn, const void* src, size_t n);
  void apply(const uint8_t* body, uint32_t nrecords);
  Status validate_body(const uint8_t* body, uint32_t body_bytes, uint32_t nrecords,
                       uint64_t seq) const;

  mm::Region& region_;
  uint64_t hdr_off_;      // byte offset of the journal header block
  uint64_t log_off_;      // byte offset of the log area
  uint64_t log_bytes_;
  mutable std::mutex mu_;  // taken last, after every other filesystem lock
  uint64_t head_lsn_ = 0;  // guarded by mu_
  uint64_t head_seq_ = 1;  // guarded by mu_
  uint64_t tail_lsn_ = 0;  // guarded by mu_
  uint64_t next_seq_ = 1;  // guarded by mu_
  uint64_t checkpoints_ = 0;  // guarded by mu_
  uint64_t pending_at_open_ = 0;
  JournalStats stats_;     // guarded by mu_
};

// Applies a bit operation to a bitmap on media (also used by mkfs and fsck repair).
void apply_bits(mm::Region& region, uint64_t bitmap_bno, uint64_t first, uint64_t count,
                bool set);
// Seals a metadata block: computes its crc (at byte offset 4) over the whole block.
void seal_block(uint8_t* block);
bool block_crc_ok(const uint8_t* block);

}  // namespace pmemfuse::fs
