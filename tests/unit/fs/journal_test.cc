// tests/unit/fs/journal_test.cc: Tx encoding, commit, replay at open (committed but not
// applied, torn, stale), the circular log wrapping, size limits and bit records.
#include "fs/journal.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fs/verify.h"
#include "mm/crc32c.h"
#include "tests/unit/fs/helpers.h"

using namespace pmemfuse;
using namespace pmemfuse::fs;
using namespace pmemfuse::fs::testing;

namespace {

// A block in the free area of a 64 MiB image, far from anything mkfs or the tests use.
constexpr uint64_t kScratch = 9000;

uint64_t log_off(const DiskSuper& sb) { return (sb.journal_start + 1) * kBlockSize; }
uint64_t log_bytes(const DiskSuper& sb) { return (sb.journal_blocks - 1) * kBlockSize; }

std::unique_ptr<Journal> reopen(mm::Region& r, const DiskSuper& sb, bool replay = true) {
  return take(Journal::open(r, sb.journal_start, sb.journal_blocks, replay), "journal reopen");
}

std::vector<uint8_t> bytes_at(const mm::Region& r, uint64_t off, size_t n) {
  return std::vector<uint8_t>(r.at(off), r.at(off) + n);
}

void poke(mm::Region& r, uint64_t off, const std::vector<uint8_t>& v) { std::memcpy(r.base() + off, v.data(), v.size()); }

DiskTxHeader tx_header_at(const mm::Region& r, const DiskSuper& sb, uint64_t lsn) {
  DiskTxHeader th;
  std::memcpy(&th, r.at(log_off(sb) + lsn), sizeof th);  // callers keep lsn inside one lap
  return th;
}

// Recomputes the crc of the transaction at lsn after a test edited its header or body.
void reseal_tx(mm::Region& r, const DiskSuper& sb, uint64_t lsn) {
  uint8_t* p = r.base() + log_off(sb) + lsn;
  DiskTxHeader th;
  std::memcpy(&th, p, sizeof th);
  th.crc = 0;
  std::memcpy(p, &th, sizeof th);
  uint32_t crc = mm::crc32c(0, p, sizeof th + th.body_bytes);
  std::memcpy(p + 4, &crc, 4);
}

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

void format_bitmap(mm::Region& r, uint64_t start, uint64_t blocks) {
  for (uint64_t i = 0; i < blocks; i++) {
    uint8_t blk[kBlockSize] = {};
    DiskBitmapHeader h{kBitmapMagic, 0, i, {}};
    std::memcpy(blk, &h, sizeof h);
    seal_block(blk);
    r.write((start + i) * kBlockSize, blk, kBlockSize);
  }
}

bool bit_at(const mm::Region& r, uint64_t bitmap_bno, uint64_t b) {
  const uint8_t* bits = r.at((bitmap_bno + b / kBitsPerBitmapBlock) * kBlockSize) + sizeof(DiskBitmapHeader);
  uint64_t i = b % kBitsPerBitmapBlock;
  return bits[i / 8] & (1u << (i % 8));
}

}  // namespace

TEST_CASE("journal: a committed transaction is applied in place and runs on_commit once",
          "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t dest = kScratch * kBlockSize + 100;
  Tx tx(r);
  int commits = 0, aborts = 0;
  tx.on_commit([&] { commits++; });
  tx.on_abort([&] { aborts++; });
  tx.write(dest, "hello journal", 13);
  uint64_t v = 0x1122334455667788ull;
  tx.put(dest + 64, v);
  uint8_t* blk = tx.stage(kScratch + 1);
  std::memset(blk, 0x5a, kBlockSize);
  CHECK_FALSE(tx.empty());
  CHECK(tx.encoded_bytes() % 64 == 0);
  CHECK(tx.encoded_bytes() >= sizeof(DiskTxHeader) + 3 * sizeof(DiskTxRecord) + 13 + 8 + kBlockSize);
  // Nothing reaches media before commit.
  CHECK(r.at(dest)[0] == 0);
  CHECK(r.at((kScratch + 1) * kBlockSize)[0] == 0);
  require_ok(st->commit(tx));
  CHECK(std::memcmp(r.at(dest), "hello journal", 13) == 0);
  uint64_t got;
  std::memcpy(&got, r.at(dest + 64), 8);
  CHECK(got == v);
  CHECK(bytes_at(r, (kScratch + 1) * kBlockSize, kBlockSize) == filled(kBlockSize, 0x5a));
  CHECK(commits == 1);
  CHECK(aborts == 0);
  CHECK(st->journal->stats().commits == 1);
  CHECK(st->journal->stats().bytes == tx.encoded_bytes());
}

TEST_CASE("journal: a dropped transaction changes nothing and runs on_abort", "[fs][journal]") {
  auto st = make_stack();
  int commits = 0, aborts = 0;
  {
    Tx tx(st->region);
    tx.on_commit([&] { commits++; });
    tx.on_abort([&] { aborts++; });
    tx.write(kScratch * kBlockSize, "x", 1);
  }
  CHECK(st->region.at(kScratch * kBlockSize)[0] == 0);
  CHECK(commits == 0);
  CHECK(aborts == 1);
  CHECK(st->journal->stats().commits == 0);
}

TEST_CASE("journal: an empty transaction commits without using the log", "[fs][journal]") {
  auto st = make_stack();
  Tx tx(st->region);
  bool ran = false;
  tx.on_commit([&] { ran = true; });
  CHECK(tx.empty());
  require_ok(st->commit(tx));
  CHECK(ran);
  CHECK(st->journal->stats().bytes == 0);
}

TEST_CASE("journal: staging a block twice returns the same staged copy", "[fs][journal]") {
  auto st = make_stack();
  Tx tx(st->region);
  uint8_t* a = tx.stage(kScratch);
  a[10] = 7;
  uint8_t* b = tx.stage(kScratch);
  CHECK(a == b);
  CHECK(b[10] == 7);
  CHECK(tx.staged(kScratch));
  CHECK_FALSE(tx.staged(kScratch + 1));
  require_ok(st->commit(tx));
  CHECK(st->region.at(kScratch * kBlockSize)[10] == 7);
}

TEST_CASE("journal: reopening after commits replays them harmlessly and the state stays applied",
          "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  for (int k = 0; k < 5; k++) {
    Tx tx(r);
    uint64_t v = 1000 + k;
    tx.put(kScratch * kBlockSize + 8 * k, v);
    tx.put(kScratch * kBlockSize + 512, v);  // overwritten by every transaction: order matters
    require_ok(st->commit(tx));
  }
  mm::Region copy = copy_region(r);
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() == 5);  // not checkpointed: all still in the log
  CHECK(j->stats().replayed == 5);
  for (int k = 0; k < 5; k++) {
    uint64_t v;
    std::memcpy(&v, copy.at(kScratch * kBlockSize + 8 * k), 8);
    CHECK(v == uint64_t(1000 + k));
  }
  uint64_t last;
  std::memcpy(&last, copy.at(kScratch * kBlockSize + 512), 8);
  CHECK(last == 1004);
  // Replay moved the head: a second open finds nothing to replay.
  j.reset();
  auto j2 = reopen(copy, st->sb);
  CHECK(j2->pending_at_open() == 0);
  // And the journal keeps working after replay.
  Tx tx(copy);
  uint64_t v = 77;
  tx.put(kScratch * kBlockSize + 1024, v);
  require_ok(j2->commit(tx));
  j2.reset();
  auto j3 = reopen(copy, st->sb);
  CHECK(j3->pending_at_open() == 1);
}

TEST_CASE("journal: checkpoint leaves nothing to replay", "[fs][journal]") {
  auto st = make_stack();
  Tx tx(st->region);
  tx.write(kScratch * kBlockSize, "abc", 3);
  require_ok(st->commit(tx));
  st->journal->checkpoint();
  CHECK(st->journal->stats().checkpoints == 1);
  mm::Region copy = copy_region(st->region);
  std::memset(copy.base() + kScratch * kBlockSize, 0, 3);
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() == 0);
  CHECK(copy.at(kScratch * kBlockSize)[0] == 0);  // not replayed over a later change
}

TEST_CASE("journal: committed but unapplied transactions are replayed at open", "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t d1 = kScratch * kBlockSize, d2 = (kScratch + 3) * kBlockSize;
  auto old1 = bytes_at(r, d1, 300);
  auto old2 = bytes_at(r, d2, kBlockSize);
  {
    Tx tx(r);
    auto v = filled(300, 0xc3);
    tx.write(d1, v.data(), uint32_t(v.size()));
    std::memset(tx.stage(kScratch + 3), 0x3c, kBlockSize);
    require_ok(st->commit(tx));
  }
  // A crash right after the commit point: the log holds the transaction, the
  // destinations still hold the old bytes.
  mm::Region copy = copy_region(r);
  poke(copy, d1, old1);
  poke(copy, d2, old2);
  REQUIRE(bytes_at(copy, d1, 300) != filled(300, 0xc3));

  SECTION("replay = true applies it") {
    auto j = reopen(copy, st->sb);
    CHECK(j->pending_at_open() == 1);
    CHECK(bytes_at(copy, d1, 300) == filled(300, 0xc3));
    CHECK(bytes_at(copy, d2, kBlockSize) == filled(kBlockSize, 0x3c));
  }
  SECTION("replay = false refuses with kReadOnly and changes nothing") {
    auto j = Journal::open(copy, st->sb.journal_start, st->sb.journal_blocks, false);
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().code == Errc::kReadOnly);
    CHECK(j.error().msg.find("replay") != std::string::npos);
    CHECK(bytes_at(copy, d1, 300) == old1);
  }
}

TEST_CASE("journal: a torn commit is not replayed", "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t d1 = kScratch * kBlockSize, d2 = (kScratch + 1) * kBlockSize;
  {
    Tx tx(r);
    tx.write(d1, "first", 5);
    require_ok(st->commit(tx));
  }
  uint64_t lsn2 = st->journal->stats().bytes;
  {
    Tx tx(r);
    auto v = filled(2000, 0xee);
    tx.write(d2, v.data(), uint32_t(v.size()));
    require_ok(st->commit(tx));
  }
  DiskTxHeader th2 = tx_header_at(r, st->sb, lsn2);
  REQUIRE(th2.magic == kTxMagic);
  REQUIRE(th2.seq == 2);
  REQUIRE(th2.lsn == lsn2);

  mm::Region copy = copy_region(r);
  std::memset(copy.base() + d1, 0, 5);
  std::memset(copy.base() + d2, 0, 2000);
  uint64_t body2 = log_off(st->sb) + lsn2 + sizeof(DiskTxHeader);

  SECTION("one flipped byte in the body") {
    copy.base()[body2 + sizeof(DiskTxRecord) + 1000] ^= 0x01;
  }
  SECTION("the body's tail never written") {
    std::memset(copy.base() + body2 + 1000, 0, th2.body_bytes - 1000);
  }
  SECTION("one flipped byte in the header") {
    copy.base()[log_off(st->sb) + lsn2 + offsetof(DiskTxHeader, nrecords)] ^= 0x02;
  }
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() == 1);  // the first transaction only
  CHECK(std::memcmp(copy.at(d1), "first", 5) == 0);
  CHECK(all_zero(std::string(reinterpret_cast<const char*>(copy.at(d2)), 2000)));
}

TEST_CASE("journal: a sequence or lsn mismatch stops replay", "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t d = kScratch * kBlockSize;
  std::vector<uint64_t> lsns;
  for (uint64_t k = 1; k <= 3; k++) {
    lsns.push_back(st->journal->stats().bytes);
    Tx tx(r);
    tx.put(d + 8 * k, k);
    require_ok(st->commit(tx));
  }
  mm::Region copy = copy_region(r);
  std::memset(copy.base() + d, 0, 64);
  uint64_t h2 = log_off(st->sb) + lsns[1];
  SECTION("seq of the second transaction skips ahead") {
    DiskTxHeader th;
    std::memcpy(&th, copy.at(h2), sizeof th);
    th.seq += 1;
    std::memcpy(copy.base() + h2, &th, sizeof th);
  }
  SECTION("lsn of the second transaction names another lap") {
    DiskTxHeader th;
    std::memcpy(&th, copy.at(h2), sizeof th);
    th.lsn += log_bytes(st->sb);
    std::memcpy(copy.base() + h2, &th, sizeof th);
  }
  reseal_tx(copy, st->sb, lsns[1]);  // only the field is wrong, the crc matches
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() == 1);
  uint64_t v[3];
  std::memcpy(v, copy.at(d + 8), sizeof v);
  CHECK(v[0] == 1);
  CHECK(v[1] == 0);
  CHECK(v[2] == 0);  // nothing after the mismatch either
}

TEST_CASE("journal: a record pointing outside the device fails the open with kCorrupt",
          "[fs][journal]") {
  auto st = make_stack();
  {
    Tx tx(st->region);
    tx.write(kScratch * kBlockSize, "abcdefgh", 8);
    require_ok(st->commit(tx));
  }
  mm::Region copy = copy_region(st->region);
  uint64_t rec = log_off(st->sb) + sizeof(DiskTxHeader);
  DiskTxRecord dr;
  std::memcpy(&dr, copy.at(rec), sizeof dr);
  REQUIRE(dr.dest == kScratch * kBlockSize);
  dr.dest = copy.size() - 4;  // 8 bytes would run past the end
  std::memcpy(copy.base() + rec, &dr, sizeof dr);
  reseal_tx(copy, st->sb, 0);
  auto j = Journal::open(copy, st->sb.journal_start, st->sb.journal_blocks, true);
  REQUIRE_FALSE(j.ok());
  CHECK(j.error().code == Errc::kCorrupt);
  CHECK(j.error().msg.find("journal") != std::string::npos);
  CHECK(j.error().msg.find("out of range") != std::string::npos);
}

TEST_CASE("journal: a header with both copies damaged fails the open with kCorrupt",
          "[fs][journal]") {
  auto st = make_stack();
  mm::Region copy = copy_region(st->region);
  uint64_t h = st->sb.journal_start * kBlockSize;
  SECTION("both copies damaged") {
    copy.base()[h + 20] ^= 0xff;
    copy.base()[h + sizeof(DiskJournalHeader) + 20] ^= 0xff;
    auto j = Journal::open(copy, st->sb.journal_start, st->sb.journal_blocks, true);
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().code == Errc::kCorrupt);
    CHECK(j.error().msg.find("journal header") != std::string::npos);
  }
  SECTION("a copy with the wrong log size does not count") {
    for (int slot = 0; slot < 2; slot++) {
      DiskJournalHeader jh;
      std::memcpy(&jh, copy.at(h + slot * sizeof jh), sizeof jh);
      if (jh.magic != kJournalMagic) continue;
      jh.log_bytes += kBlockSize;
      jh.crc = 0;
      jh.crc = mm::crc32c(0, &jh, sizeof jh);
      std::memcpy(copy.base() + h + slot * sizeof jh, &jh, sizeof jh);
    }
    auto j = Journal::open(copy, st->sb.journal_start, st->sb.journal_blocks, true);
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().code == Errc::kCorrupt);
  }
  SECTION("the newer header copy damaged: the older one is used and its log replayed") {
    Tx a(st->region);
    a.write(kScratch * kBlockSize, "A", 1);
    require_ok(st->commit(a));
    st->journal->checkpoint();  // checkpoints = 2: slot 0, head after A (mkfs wrote 1: slot 1)
    Tx b(st->region);
    b.write(kScratch * kBlockSize + 1, "B", 1);
    require_ok(st->commit(b));
    st->journal->checkpoint();  // checkpoints = 3: slot 1, head after B
    mm::Region intact = copy_region(st->region);
    CHECK(reopen(intact, st->sb)->pending_at_open() == 0);
    mm::Region c2 = copy_region(st->region);
    c2.base()[h + sizeof(DiskJournalHeader) + 20] ^= 0xff;  // slot 1
    c2.base()[kScratch * kBlockSize + 1] = 0;
    auto j = reopen(c2, st->sb);
    CHECK(j->pending_at_open() == 1);  // B, from the older head
    CHECK(c2.at(kScratch * kBlockSize + 1)[0] == 'B');
  }
  SECTION("a journal smaller than 16 blocks is refused") {
    auto j = Journal::open(copy, st->sb.journal_start, 8, true);
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().code == Errc::kCorrupt);
  }
}

TEST_CASE("journal: the log wraps around many times and replay after a wrap is consistent",
          "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t lb = log_bytes(st->sb);
  const uint64_t slot = kScratch * kBlockSize;          // last counter
  const uint64_t filler = (kScratch + 10) * kBlockSize;  // variable-sized payload area
  std::mt19937_64 rng(42);
  uint64_t tail = 0, counter = 0, laps_needed = 3;
  bool straddled_last = false;
  std::vector<uint8_t> last_fill;
  for (int guard = 0; guard < 20000; guard++) {
    Tx tx(r);
    counter++;
    tx.put(slot, counter);
    size_t n = 8 + rng() % 20000;
    std::vector<uint8_t> fill(n);
    for (auto& b : fill) b = uint8_t(rng());
    tx.write(filler, fill.data(), uint32_t(n));
    uint64_t total = tx.encoded_bytes();
    uint64_t pos = tail % lb;
    // The log head moves to the tail when the log is full; the position is still tail % lb.
    require_ok(st->commit(tx));
    straddled_last = pos + total > lb;
    tail += total;
    last_fill = std::move(fill);
    if (tail > laps_needed * lb && straddled_last) break;
  }
  REQUIRE(straddled_last);
  REQUIRE(st->journal->stats().checkpoints >= laps_needed - 1);
  REQUIRE(st->journal->stats().bytes == tail);
  uint64_t v;
  std::memcpy(&v, r.at(slot), 8);
  REQUIRE(v == counter);

  // Crash image: the last transaction (which wraps over the end of the log) was committed
  // but its in-place writes were lost.
  mm::Region copy = copy_region(r);
  std::memset(copy.base() + slot, 0, 8);
  std::memset(copy.base() + filler, 0, last_fill.size());
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() >= 1);
  std::memcpy(&v, copy.at(slot), 8);
  CHECK(v == counter);
  CHECK(bytes_at(copy, filler, last_fill.size()) == last_fill);

  // The reopened journal continues from there: more commits, another reopen.
  for (int k = 0; k < 300; k++) {
    Tx tx(copy);
    counter++;
    tx.put(slot, counter);
    std::vector<uint8_t> fill(100 + rng() % 9000, uint8_t(k));
    tx.write(filler, fill.data(), uint32_t(fill.size()));
    require_ok(j->commit(tx));
  }
  j.reset();
  mm::Region copy2 = copy_region(copy);
  std::memset(copy2.base() + slot, 0, 8);
  auto j2 = reopen(copy2, st->sb);
  std::memcpy(&v, copy2.at(slot), 8);
  CHECK(v == counter);
}

TEST_CASE("journal: a transaction larger than a quarter of the log is rejected", "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  REQUIRE(st->journal->max_tx_bytes() == log_bytes(st->sb) / 4);
  size_t nblocks = st->journal->max_tx_bytes() / kBlockSize + 1;
  bool aborted = false;
  {
    Tx tx(r);
    tx.on_abort([&] { aborted = true; });
    for (size_t k = 0; k < nblocks; k++) std::memset(tx.stage(kScratch + k), 0x77, kBlockSize);
    REQUIRE(tx.encoded_bytes() > st->journal->max_tx_bytes());
    Status s = st->commit(tx);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == Errc::kInvalid);
    CHECK(s.error().msg.find("exceeds") != std::string::npos);
  }
  CHECK(aborted);
  for (size_t k = 0; k < nblocks; k++) CHECK(r.at((kScratch + k) * kBlockSize)[0] == 0);
  CHECK(st->journal->stats().commits == 0);
  // A transaction just under the limit still commits (each staged block also costs a
  // 16-byte record header, so leave room for them).
  Tx ok(r);
  for (size_t k = 0; (k + 1) * (kBlockSize + 16) + 64 <= st->journal->max_tx_bytes(); k++) std::memset(ok.stage(kScratch + k), 0x11, kBlockSize);
  REQUIRE(ok.encoded_bytes() <= st->journal->max_tx_bytes());
  require_ok(st->commit(ok));
  CHECK(r.at(kScratch * kBlockSize)[0] == 0x11);
}

TEST_CASE("journal: bit records set and clear bits across bitmap blocks and keep the crc valid",
          "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t bm = kScratch;  // a private two-block bitmap
  format_bitmap(r, bm, 2);
  REQUIRE(block_crc_ok(r.at(bm * kBlockSize)));
  const uint64_t first = kBitsPerBitmapBlock - 300, count = 700;  // spans both blocks
  {
    Tx tx(r);
    tx.set_bits(bm, first, count);
    require_ok(st->commit(tx));
  }
  for (uint64_t b = first - 20; b < first + count + 20; b++) {
    INFO("bit " << b);
    CHECK(bit_at(r, bm, b) == (b >= first && b < first + count));
  }
  CHECK(block_crc_ok(r.at(bm * kBlockSize)));
  CHECK(block_crc_ok(r.at((bm + 1) * kBlockSize)));
  require_ok(verify_bitmap_block(r.at(bm * kBlockSize), bm, 0, "test bitmap"));
  require_ok(verify_bitmap_block(r.at((bm + 1) * kBlockSize), bm + 1, 1, "test bitmap"));
  auto before_clear0 = bytes_at(r, bm * kBlockSize, kBlockSize);
  auto before_clear1 = bytes_at(r, (bm + 1) * kBlockSize, kBlockSize);
  const uint64_t cfirst = first + 250, ccount = 100;  // also across the boundary
  {
    Tx tx(r);
    tx.clear_bits(bm, cfirst, ccount);
    tx.set_bits(bm, 5, 3);  // several bit records in one transaction
    require_ok(st->commit(tx));
  }
  auto expect = [&](uint64_t b) {
    return (b >= first && b < first + count && !(b >= cfirst && b < cfirst + ccount)) || (b >= 5 && b < 8);
  };
  for (uint64_t b = 0; b < 16; b++) CHECK(bit_at(r, bm, b) == expect(b));
  for (uint64_t b = first - 20; b < first + count + 20; b++) {
    INFO("bit " << b);
    CHECK(bit_at(r, bm, b) == expect(b));
  }
  CHECK(block_crc_ok(r.at(bm * kBlockSize)));
  CHECK(block_crc_ok(r.at((bm + 1) * kBlockSize)));

  // Replayed from the log onto the pre-transaction blocks: same result, crc still valid.
  mm::Region copy = copy_region(r);
  poke(copy, bm * kBlockSize, before_clear0);
  poke(copy, (bm + 1) * kBlockSize, before_clear1);
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() == 2);
  for (uint64_t b = first - 20; b < first + count + 20; b++) CHECK(bit_at(copy, bm, b) == expect(b));
  CHECK(block_crc_ok(copy.at(bm * kBlockSize)));
  CHECK(block_crc_ok(copy.at((bm + 1) * kBlockSize)));
}

TEST_CASE("journal: apply_bits and seal_block keep block_crc_ok in agreement", "[fs][journal]") {
  auto r = take(mm::Region::anonymous(kMinBlocks * kBlockSize));
  format_bitmap(r, 10, 1);
  CHECK(block_crc_ok(r.at(10 * kBlockSize)));
  apply_bits(r, 10, 0, 1, true);
  CHECK(bit_at(r, 10, 0));
  CHECK(block_crc_ok(r.at(10 * kBlockSize)));
  apply_bits(r, 10, 0, 1, false);
  CHECK_FALSE(bit_at(r, 10, 0));
  CHECK(block_crc_ok(r.at(10 * kBlockSize)));
  r.base()[10 * kBlockSize + 2000] ^= 4;  // a bit flipped behind the crc's back
  CHECK_FALSE(block_crc_ok(r.at(10 * kBlockSize)));
  uint8_t blk[kBlockSize];
  std::memcpy(blk, r.at(10 * kBlockSize), kBlockSize);
  seal_block(blk);
  CHECK(block_crc_ok(blk));
}

TEST_CASE("journal: stale transactions of an older lap are not replayed", "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  const uint64_t lb = log_bytes(st->sb);
  const uint64_t slot = kScratch * kBlockSize;
  uint64_t counter = 0;
  // Fill more than one lap with same-sized transactions, then checkpoint (clean unmount).
  while (st->journal->stats().bytes < lb + lb / 2) {
    Tx tx(r);
    counter++;
    tx.put(slot, counter);
    std::vector<uint8_t> fill(3000, uint8_t(counter));
    tx.write(slot + 64, fill.data(), uint32_t(fill.size()));
    require_ok(st->commit(tx));
  }
  st->journal->checkpoint();
  // The log is full of valid-looking transactions from earlier laps; none may replay.
  mm::Region copy = copy_region(r);
  uint64_t zero = 0;
  std::memcpy(copy.base() + slot, &zero, 8);
  auto j = reopen(copy, st->sb);
  CHECK(j->pending_at_open() == 0);
  uint64_t v;
  std::memcpy(&v, copy.at(slot), 8);
  CHECK(v == 0);
}

TEST_CASE("journal: a write into a block staged earlier lands in the staged copy", "[fs][journal]") {
  auto st = make_stack();
  mm::Region& r = st->region;
  Tx tx(r);
  uint8_t* blk = tx.stage(kScratch);
  std::memset(blk, 0x11, kBlockSize);
  tx.write(kScratch * kBlockSize + 100, "later", 5);
  CHECK(std::memcmp(tx.stage(kScratch) + 100, "later", 5) == 0);
  blk[102] = 'X';  // a change to the stage after the write wins: program order
  // A write spanning two blocks is recorded separately and applied after the stages.
  tx.write(kScratch * kBlockSize + kBlockSize - 2, "span", 4);
  require_ok(st->commit(tx));
  CHECK(std::memcmp(r.at(kScratch * kBlockSize + 100), "laXer", 5) == 0);
  CHECK(std::memcmp(r.at(kScratch * kBlockSize + kBlockSize - 2), "span", 4) == 0);
  CHECK(r.at(kScratch * kBlockSize)[0] == 0x11);
}
