// fs/journal.cc: transaction encoding, the circular log, commit and replay.
#include "fs/journal.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "mm/crc32c.h"

namespace pmemfuse::fs {
namespace {

constexpr uint64_t kTxAlign = 64;  // transactions start on cache lines

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint32_t header_crc(const DiskJournalHeader& h) {
  DiskJournalHeader c = h;
  c.crc = 0;
  return mm::crc32c(0, &c, sizeof c);
}

struct BitPayload {
  uint64_t first;
  uint64_t count;
};

// What a record writes lies inside the device. A transaction with a valid crc was
// written by us, but the media under it may have been damaged since.
bool record_in_device(const DiskTxRecord& r, const uint8_t* payload, uint64_t device_bytes) {
  if (r.kind == uint16_t(RecKind::kBytes)) return r.len <= device_bytes && r.dest <= device_bytes - r.len;
  bool bits = r.kind == uint16_t(RecKind::kSetBits) || r.kind == uint16_t(RecKind::kClearBits);
  if (!bits || r.len != sizeof(BitPayload)) return false;
  BitPayload p;
  std::memcpy(&p, payload, sizeof p);
  uint64_t blocks = device_bytes / kBlockSize;
  if (r.dest >= blocks) return false;
  if (p.count == 0) return true;
  // The bitmap block of the last bit, computed without overflow.
  return p.first <= UINT64_MAX - p.count && (p.first + p.count - 1) / kBitsPerBitmapBlock < blocks - r.dest;
}

}  // namespace

// ---- Tx ----

Tx::~Tx() {
  if (committed_) return;
  for (auto it = on_abort_.rbegin(); it != on_abort_.rend(); ++it) (*it)();
}

void Tx::write(uint64_t off, const void* src, uint32_t n) {
  auto p = static_cast<const uint8_t*>(src);
  auto st = staged_.find(off / kBlockSize);
  if (st != staged_.end() && (off + n - 1) / kBlockSize == off / kBlockSize) {
    std::memcpy(st->second.get() + off % kBlockSize, p, n);
    return;
  }
  recs_.push_back({off, RecKind::kBytes, std::vector<uint8_t>(p, p + n)});
}

uint8_t* Tx::stage(uint64_t bno) {
  auto it = staged_.find(bno);
  if (it != staged_.end()) return it->second.get();
  auto buf = std::make_unique<uint8_t[]>(kBlockSize);
  std::memcpy(buf.get(), region_.at(bno * kBlockSize), kBlockSize);
  return staged_.emplace(bno, std::move(buf)).first->second.get();
}

void Tx::set_bits(uint64_t bitmap_bno, uint64_t first, uint64_t count) {
  BitPayload p{first, count};
  auto b = reinterpret_cast<const uint8_t*>(&p);
  recs_.push_back({bitmap_bno, RecKind::kSetBits, std::vector<uint8_t>(b, b + sizeof p)});
}

void Tx::clear_bits(uint64_t bitmap_bno, uint64_t first, uint64_t count) {
  BitPayload p{first, count};
  auto b = reinterpret_cast<const uint8_t*>(&p);
  recs_.push_back({bitmap_bno, RecKind::kClearBits, std::vector<uint8_t>(b, b + sizeof p)});
}

size_t Tx::encoded_bytes() const {
  size_t n = sizeof(DiskTxHeader);
  for (const Rec& r : recs_) n += sizeof(DiskTxRecord) + round_up(r.data.size(), 8);
  n += staged_.size() * (sizeof(DiskTxRecord) + kBlockSize);
  return round_up(n, kTxAlign);
}

void Tx::on_committed() {
  committed_ = true;
  for (auto& f : on_commit_) f();
}

// ---- block helpers ----

void seal_block(uint8_t* block) {
  std::memset(block + 4, 0, 4);
  uint32_t crc = mm::crc32c(0, block, kBlockSize);
  std::memcpy(block + 4, &crc, 4);
}

bool block_crc_ok(const uint8_t* block) {
  uint32_t stored;
  std::memcpy(&stored, block + 4, 4);
  static const uint8_t zeros[4] = {};
  uint32_t crc = mm::crc32c(0, block, 4);
  crc = mm::crc32c(crc, zeros, 4);
  crc = mm::crc32c(crc, block + 8, kBlockSize - 8);
  return crc == stored;
}

void apply_bits(mm::Region& region, uint64_t bitmap_bno, uint64_t first, uint64_t count,
                bool set) {
  uint8_t block[kBlockSize];
  while (count > 0) {
    uint64_t bi = first / kBitsPerBitmapBlock, bit = first % kBitsPerBitmapBlock;
    uint64_t n = std::min(count, kBitsPerBitmapBlock - bit);
    uint64_t off = (bitmap_bno + bi) * kBlockSize;
    std::memcpy(block, region.at(off), kBlockSize);
    uint8_t* bits = block + sizeof(DiskBitmapHeader);
    for (uint64_t i = bit; i < bit + n; i++) {
      if (set) bits[i / 8] |= uint8_t(1u << (i % 8));
      else bits[i / 8] &= uint8_t(~(1u << (i % 8)));
    }
    seal_block(block);
    uint64_t lo = sizeof(DiskBitmapHeader) + bit / 8, hi = sizeof(DiskBitmapHeader) + (bit + n + 7) / 8;
    region.write(off + 4, block + 4, 4);
    region.write(off + lo, block + lo, hi - lo);
    first += n;
    count -= n;
  }
}

// ---- Journal ----

Journal::Journal(mm::Region& region, uint64_t start, uint64_t blocks)
    : region_(region),
      hdr_off_(start * kBlockSize),
      log_off_((start + 1) * kBlockSize),
      log_bytes_((blocks - 1) * kBlockSize) {}

void Journal::format(mm::Region& region, uint64_t start, uint64_t blocks) {
  region.zero(start * kBlockSize, kBlockSize);
  DiskJournalHeader h{};
  h.magic = kJournalMagic;
  h.checkpoints = 1;
  h.head_lsn = 0;
  h.head_seq = 1;
  h.log_bytes = (blocks - 1) * kBlockSize;
  h.crc = header_crc(h);
  region.write(start * kBlockSize + (h.checkpoints % 2) * sizeof h, &h, sizeof h);
  // A log of zeros holds no valid transaction at lsn 0.
  region.zero((start + 1) * kBlockSize, kBlockSize);
  region.fence();
}

Result<std::unique_ptr<Journal>> Journal::open(mm::Region& region, uint64_t start,
                                               uint64_t blocks, bool replay) {
  if (blocks < 16) return make_error(Errc::kCorrupt, "journal: only " + std::to_string(blocks) + " blocks");
  std::unique_ptr<Journal> j(new Journal(region, start, blocks));
  PF_CHECK(j->recover(replay));
  return j;
}

void Journal::copy_out(uint64_t lsn, void* dst, size_t n) const {
  auto d = static_cast<uint8_t*>(dst);
  while (n > 0) {
    uint64_t pos = lsn % log_bytes_;
    size_t k = std::min<uint64_t>(n, log_bytes_ - pos);
    std::memcpy(d, region_.at(log_off_ + pos), k);
    d += k;
    lsn += k;
    n -= k;
  }
}

void Journal::copy_in(uint64_t lsn, const void* src, size_t n) {
  auto s = static_cast<const uint8_t*>(src);
  while (n > 0) {
    uint64_t pos = lsn % log_bytes_;
    size_t k = std::min<uint64_t>(n, log_bytes_ - pos);
    region_.write(log_off_ + pos, s, k);
    s += k;
    lsn += k;
    n -= k;
  }
}

void Journal::write_header_locked() {
  DiskJournalHeader h{};
  h.magic = kJournalMagic;
  h.checkpoints = ++checkpoints_;
  h.head_lsn = head_lsn_;
  h.head_seq = head_seq_;
  h.log_bytes = log_bytes_;
  h.crc = header_crc(h);
  region_.write(hdr_off_ + (checkpoints_ % 2) * sizeof h, &h, sizeof h);
  region_.fence();
}

Status Journal::validate_body(const uint8_t* body, uint32_t body_bytes, uint32_t nrecords,
                              uint64_t seq) const {
  uint64_t off = 0;
  for (uint32_t i = 0; i < nrecords; i++) {
    DiskTxRecord r;
    bool inside = off + sizeof r <= body_bytes;
    if (inside) {
      std::memcpy(&r, body + off, sizeof r);
      off += sizeof r;
      inside = r.len <= body_bytes - off;
    }
    if (!inside || !record_in_device(r, body + off, region_.size())) {
      return make_error(Errc::kCorrupt, "journal: transaction " + std::to_string(seq) +
                                            " record " + std::to_string(i) + " out of range");
    }
    off += round_up(r.len, 8);
  }
  if (off > body_bytes) {
    return make_error(Errc::kCorrupt, "journal: transaction " + std::to_string(seq) + " truncated");
  }
  return {};
}

void Journal::apply(const uint8_t* body, uint32_t nrecords) {
  uint64_t off = 0;
  for (uint32_t i = 0; i < nrecords; i++) {
    DiskTxRecord r;
    std::memcpy(&r, body + off, sizeof r);
    off += sizeof r;
    if (r.kind == uint16_t(RecKind::kBytes)) {
      region_.write(r.dest, body + off, r.len);
    } else {
      BitPayload p;
      std::memcpy(&p, body + off, sizeof p);
      apply_bits(region_, r.dest, p.first, p.count, r.kind == uint16_t(RecKind::kSetBits));
    }
    off += round_up(r.len, 8);
  }
}

Journal::TxRead Journal::read_tx(uint64_t lsn, uint64_t seq, DiskTxHeader* th,
                                 std::vector<uint8_t>* body) const {
  copy_out(lsn, th, sizeof *th);
  if (th->magic != kTxMagic || th->lsn != lsn || th->seq != seq || th->body_bytes > log_bytes_ - sizeof *th) {
    return TxRead::kEnd;
  }
  body->resize(th->body_bytes);
  copy_out(lsn + sizeof *th, body->data(), body->size());
  DiskTxHeader zc = *th;
  zc.crc = 0;
  uint32_t crc = mm::crc32c(mm::crc32c(0, &zc, sizeof zc), body->data(), body->size());
  return crc == th->crc ? TxRead::kValid : TxRead::kBadCrc;
}

Status Journal::recover(bool replay) {
  DiskJournalHeader best{};
  bool found = false;
  for (int slot = 0; slot < 2; slot++) {
    DiskJournalHeader h;
    std::memcpy(&h, region_.at(hdr_off_ + slot * sizeof h), sizeof h);
    if (h.magic != kJournalMagic || h.crc != header_crc(h) || h.log_bytes != log_bytes_) continue;
    if (!found || h.checkpoints > best.checkpoints) best = h;
    found = true;
  }
  if (!found) {
    return make_error(Errc::kCorrupt, "journal header (block " + std::to_string(hdr_off_ / kBlockSize) +
                                          "): both copies fail magic/crc/size checks");
  }
  checkpoints_ = best.checkpoints;
  uint64_t lsn = best.head_lsn, seq = best.head_seq;
  std::vector<uint8_t> body;
  for (;;) {
    DiskTxHeader th;
    TxRead got = read_tx(lsn, seq, &th, &body);
    uint64_t next = lsn + round_up(sizeof th + th.body_bytes, kTxAlign);
    if (got == TxRead::kBadCrc && read_tx(next, seq + 1, &th, &body) == TxRead::kValid) {
      // A torn commit is always the last transaction. Stopping at a damaged one that
      // has successors would roll back the blocks it shares with older transactions.
      return make_error(Errc::kCorrupt, "journal: transaction " + std::to_string(seq) + " at lsn " +
                                            std::to_string(lsn) + " fails its crc, but transaction " +
                                            std::to_string(seq + 1) + " follows it");
    }
    if (got != TxRead::kValid) break;
    PF_CHECK(validate_body(body.data(), th.body_bytes, th.nrecords, seq));
    if (replay) apply(body.data(), th.nrecords);
    pending_at_open_++;
    lsn = next;
    seq++;
  }
  if (pending_at_open_ > 0 && !replay) {
    return make_error(Errc::kReadOnly, "journal: " + std::to_string(pending_at_open_) +
                                           " committed transactions need replay");
  }
  head_lsn_ = tail_lsn_ = lsn;
  head_seq_ = next_seq_ = seq;
  stats_.replayed = pending_at_open_;
  if (replay && pending_at_open_ > 0) {
    region_.fence();
    write_header_locked();
  }
  return {};
}

Status Journal::commit(Tx& tx) {
  if (tx.empty()) {
    tx.on_committed();
    return {};
  }
  size_t total = tx.encoded_bytes();
  if (total > max_tx_bytes()) {
    return make_error(Errc::kInvalid, "journal: transaction of " + std::to_string(total) +
                                          " bytes exceeds the limit of " + std::to_string(max_tx_bytes()));
  }
  std::vector<uint8_t> buf(total, 0);
  uint64_t off = sizeof(DiskTxHeader);
  uint32_t nrec = 0;
  auto emit = [&](uint64_t dest, RecKind kind, const uint8_t* data, uint32_t len) {
    DiskTxRecord r{dest, len, uint16_t(kind), 0};
    std::memcpy(buf.data() + off, &r, sizeof r);
    std::memcpy(buf.data() + off + sizeof r, data, len);
    off += sizeof r + round_up(len, 8);
    nrec++;
  };
  for (auto& [bno, data] : tx.staged_) emit(bno * kBlockSize, RecKind::kBytes, data.get(), kBlockSize);
  for (auto& r : tx.recs_) emit(r.dest, r.kind, r.data.data(), uint32_t(r.data.size()));

  std::unique_lock lk(mu_);
  if (tail_lsn_ + total - head_lsn_ > log_bytes_) {
    // Every applied transaction was fenced at its commit: moving the head is enough.
    head_lsn_ = tail_lsn_;
    head_seq_ = next_seq_;
    write_header_locked();
    stats_.checkpoints++;
  }
  DiskTxHeader th{kTxMagic, 0, next_seq_, tail_lsn_, uint32_t(off - sizeof(DiskTxHeader)), nrec};
  std::memcpy(buf.data(), &th, sizeof th);
  th.crc = mm::crc32c(0, buf.data(), off);
  std::memcpy(buf.data() + 4, &th.crc, 4);

  region_.fence();  // data written before commit is durable before the record
  copy_in(tail_lsn_, buf.data(), off);
  region_.fence();  // commit point
  apply(buf.data() + sizeof th, nrec);
  region_.fence();  // applied in place: the log space may be reused after this
  tail_lsn_ += total;
  next_seq_++;
  stats_.commits++;
  stats_.bytes += total;
  if (tx.frees_blocks_) {
    head_lsn_ = tail_lsn_;
    head_seq_ = next_seq_;
    write_header_locked();
    stats_.checkpoints++;
  }
  lk.unlock();
  tx.on_committed();
  return {};
}

void Journal::checkpoint() {
  std::lock_guard lk(mu_);
  if (head_lsn_ == tail_lsn_) return;
  head_lsn_ = tail_lsn_;
  head_seq_ = next_seq_;
  write_header_locked();
  stats_.checkpoints++;
}

JournalStats Journal::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace pmemfuse::fs
