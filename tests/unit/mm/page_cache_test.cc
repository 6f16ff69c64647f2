// tests/unit/mm/page_cache_test.cc: the DRAM write-back cache (mm/page_cache.h) driven
// directly, with a fake media behind the callbacks: hits and misses, fills, write
// coalescing, double buffering, the memory bound and writer back-pressure, truncation under
// quiesce, failed flushes, forget and discard, clean-page reclaim and the reservation
// taken when a clean page is first written.
#include "mm/page_cache.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "mm/region.h"

using namespace pmemfuse;
using namespace pmemfuse::mm;
using namespace std::chrono_literals;

namespace {

// The byte every byte of media page idx holds.
char media_byte(uint64_t idx) { return char(0x40 + idx % 64); }

// Stands in for the filesystem below the cache: fills pages for writes and points reads
// at pages (media_byte, or zeros for a hole), counting the calls. Thread-safe for fills.
struct Media {
  bool zeros = false;              // set before use
  std::atomic<uint64_t> fills{0};  // calls with a buffer
  std::atomic<uint64_t> nulls{0};  // calls without: the caller overwrites the whole page
  uint64_t reads = 0;              // pages a read took from media
  std::map<uint64_t, std::string> pages;

  MediaFn reader() {
    return [this](uint64_t idx, const uint8_t** data) -> Result<uint64_t> {
      reads++;
      if (zeros) return uint64_t(0);
      auto& p = pages[idx];
      p.assign(kPageSize, media_byte(idx));
      *data = reinterpret_cast<const uint8_t*>(p.data());
      return kPageSize;
    };
  }

  // reserve: what the fill answers (a block was reserved for the page).
  MissFn miss(bool reserve = false) {
    return [this, reserve](uint64_t idx, uint8_t* buf) -> Result<bool> {
      if (buf) {
        fills++;
        std::memset(buf, zeros ? 0 : media_byte(idx), kPageSize);
      } else {
        nulls++;
      }
      return reserve;
    };
  }
  uint64_t calls() const { return fills + nulls; }
};

std::unique_ptr<PageCache> make_cache(uint64_t pages = 256) {
  auto c = PageCache::create(pages);
  REQUIRE(c.ok());
  return std::move(*c);
}

// Distinct content per (seed, offset).
std::string bytes(uint64_t n, char seed) {
  std::string s(n, '\0');
  for (uint64_t k = 0; k < n; k++) s[k] = char(seed + k % 13);
  return s;
}

void put(PageCache& c, CachedFile& f, uint64_t off, const std::string& s, const MissFn& miss,
         int64_t now_ns = 1) {
  auto r = c.write(f, off, reinterpret_cast<const uint8_t*>(s.data()), s.size(), now_ns, true, miss);
  REQUIRE(r.ok());
  REQUIRE(*r == s.size());
}

std::string get(PageCache& c, CachedFile& f, uint64_t off, uint64_t len, Media& m) {
  std::string out;
  Status st = c.read(f, off, len, m.reader(), [&](const struct iovec* iov, int n) {
    for (int k = 0; k < n; k++)
      out.append(static_cast<const char*>(iov[k].iov_base), iov[k].iov_len);
  });
  REQUIRE(st.ok());
  return out;
}

std::string page_of(const FlushPage& p) {
  return std::string(reinterpret_cast<const char*>(p.data), kPageSize);
}

// Writes back everything dirty in f, successfully.
void flush(PageCache& c, CachedFile& f) {
  FlushBatch b = c.take_dirty(f);
  c.finish_flush(f, b, true, 1);
}

}  // namespace

TEST_CASE("page cache: cached pages read back as written without media; others come from media and are not kept",
          "[mm][cache]") {
  auto c = make_cache();
  Media m;
  auto f = c->open(7, 10 * kPageSize);
  std::string data = bytes(3 * kPageSize, 'a');
  put(*c, *f, 0, data, m.miss());
  uint64_t calls = m.calls();

  CHECK(get(*c, *f, 0, data.size(), m) == data);
  CHECK(get(*c, *f, 100, 5000, m) == data.substr(100, 5000));
  CHECK(m.calls() == calls);
  CHECK(m.reads == 0);
  CHECK(c->stats().hits == 5);
  CHECK(c->stats().misses == 0);

  // Pages 5 and 6 are not cached: they come from the media each time (the kernel's page
  // cache keeps read data), and the cache stays as it was.
  std::string media = std::string(kPageSize, media_byte(5)) + std::string(kPageSize, media_byte(6));
  CHECK(get(*c, *f, 5 * kPageSize, 2 * kPageSize, m) == media);
  CHECK(get(*c, *f, 5 * kPageSize, 2 * kPageSize, m) == media);
  CHECK(m.reads == 4);
  CHECK(c->stats().misses == 4);
  CHECK(c->stats().hits == 5);
  CHECK(c->stats().cached_pages == 3);
  CHECK(c->stats().dirty_pages == 3);
  // Past the logical size nothing is read; a hole reads as zeros.
  CHECK(get(*c, *f, 9 * kPageSize, 5 * kPageSize, m).size() == kPageSize);
  m.zeros = true;
  CHECK(get(*c, *f, 4 * kPageSize, 10, m) == std::string(10, '\0'));
}

TEST_CASE("page cache: a partial-page write fills the page first, a whole-page write does not",
          "[mm][cache]") {
  auto c = make_cache();
  Media m;
  auto f = c->open(1, 8 * kPageSize);

  put(*c, *f, kPageSize + 100, "xyz", m.miss());
  CHECK(m.fills == 1);
  CHECK(m.nulls == 0);
  CHECK(get(*c, *f, kPageSize, 200, m) ==
        std::string(100, media_byte(1)) + "xyz" + std::string(97, media_byte(1)));

  std::string whole = bytes(kPageSize, 'w');
  put(*c, *f, 3 * kPageSize, whole, m.miss());
  CHECK(m.fills == 1);
  CHECK(m.nulls == 1);

  // Across a page boundary: two partial pages, two fills.
  put(*c, *f, 5 * kPageSize - 10, "0123456789abcdefghij", m.miss());
  CHECK(m.fills == 3);
  CHECK(get(*c, *f, 5 * kPageSize - 12, 24, m) ==
        std::string(2, media_byte(4)) + "0123456789abcdefghij" + std::string(2, media_byte(5)));
  CHECK(get(*c, *f, 3 * kPageSize, kPageSize, m) == whole);
  CHECK(c->stats().misses == 0);  // every page read was cached by its write
}

TEST_CASE("page cache: overwrites of one page coalesce into one page written back", "[mm][cache]") {
  auto c = make_cache();
  Media m;
  auto f = c->open(1, 0);
  const uint64_t kWrite = 100;
  for (uint64_t k = 0; k < 100; k++)
    put(*c, *f, k * 10, bytes(kWrite, char('A' + k % 26)), m.miss());

  FlushBatch b = c->take_dirty(*f);
  REQUIRE(b.pages.size() == 1);
  CHECK(b.pages[0].index == 0);
  CHECK(b.size == 99 * 10 + kWrite);
  c->finish_flush(*f, b, true, 1000);
  CHECK_FALSE(f->has_dirty());
  CHECK(f->mtime_ns() == 0);
  CacheStats s = c->stats();
  CHECK(s.dirty_pages == 0);
  CHECK(s.cached_pages == 1);
  CHECK(s.pmem_bytes == kPageSize);
  CHECK(s.app_bytes == 100 * kWrite);
  CHECK(s.flush_batches == 1);
  CHECK(c->take_dirty(*f).pages.empty());
  c->finish_flush(*f, {}, true, 0);
}

TEST_CASE("page cache: a flush takes exactly the dirty pages, in order, among many clean ones",
          "[mm][cache]") {
  auto c = make_cache(512);
  Media m;
  auto f = c->open(1, 0);
  put(*c, *f, 0, bytes(300 * kPageSize, 'c'), m.miss());
  flush(*c, *f);  // 300 clean pages
  for (uint64_t idx : {250, 3, 77, 150, 299})
    put(*c, *f, idx * kPageSize + 10, "dirty", m.miss());
  {
    auto lk = c->quiesce(*f);
    CHECK(c->zero_locked(*f, 299 * kPageSize, UINT64_MAX) == 0);  // drops dirty page 299
    c->set_size_locked(*f, 299 * kPageSize);
  }
  FlushBatch b = c->take_dirty(*f);
  std::vector<uint64_t> got;
  for (const FlushPage& p : b.pages) got.push_back(p.index);
  CHECK(got == std::vector<uint64_t>{3, 77, 150, 250});
  CHECK(page_of(b.pages[1]).substr(10, 5) == "dirty");
  c->finish_flush(*f, b, true, 1);
  CHECK_FALSE(f->has_dirty());
  CHECK(c->take_dirty(*f).pages.empty());
  c->finish_flush(*f, {}, true, 0);
}

TEST_CASE("page cache: a write to a page being flushed takes a second buffer, not a wait",
          "[mm][cache]") {
  auto c = make_cache();
  Media m;
  auto f = c->open(1, 0);
  std::string old_data = bytes(kPageSize, 'o'), new_data = bytes(kPageSize, 'N');
  put(*c, *f, 0, old_data, m.miss());

  FlushBatch b = c->take_dirty(*f);  // the flusher holds the frozen page from here on
  REQUIRE(b.pages.size() == 1);
  auto writer = std::async(std::launch::async, [&] {
    return c->write(*f, 0, reinterpret_cast<const uint8_t*>(new_data.data()), kPageSize, 2, true,
                    m.miss());
  });
  bool quick = writer.wait_for(1s) == std::future_status::ready;
  if (!quick) c->finish_flush(*f, b, true, 1);  // let the writer go before failing
  REQUIRE(quick);
  REQUIRE(writer.get().ok());
  CHECK(page_of(b.pages[0]) == old_data);
  CHECK(get(*c, *f, 0, kPageSize, m) == new_data);
  CHECK(c->stats().second_buffers == 1);
  CHECK(c->stats().cached_pages == 2);

  c->finish_flush(*f, b, true, 1);
  CHECK(f->has_dirty());
  CHECK(c->dirty_pages() == 1);
  CHECK(c->stats().cached_pages == 1);  // the superseded buffer went back
  FlushBatch again = c->take_dirty(*f);
  REQUIRE(again.pages.size() == 1);
  CHECK(page_of(again.pages[0]) == new_data);
  c->finish_flush(*f, again, true, 1);
  CHECK_FALSE(f->has_dirty());
}

TEST_CASE("page cache: written-back pages are reclaimed for new ones and the cache stays within it",
          "[mm][cache]") {
  auto c = make_cache(PageCache::kMinPages);
  REQUIRE(c->capacity() == PageCache::kMinPages);
  Media m;
  const uint64_t kPages = 10 * PageCache::kMinPages;
  auto f = c->open(1, 0);
  uint64_t most = 0;
  for (uint64_t idx = 0; idx < kPages; idx++) {
    put(*c, *f, idx * kPageSize, std::string(kPageSize, media_byte(idx)), m.miss());
    if (idx % 8 == 7) flush(*c, *f);
    most = std::max(most, c->stats().cached_pages);
  }
  CHECK(most == c->capacity());
  CHECK(c->stats().evictions >= kPages - c->capacity());
  CHECK(c->stats().pressure_waits == 0);
  // The pages still cached read back from DRAM, the rest from media.
  std::string all = get(*c, *f, 0, kPages * kPageSize, m);
  REQUIRE(all.size() == kPages * kPageSize);
  uint64_t wrong = 0;
  for (uint64_t idx = 0; idx < kPages; idx++) wrong += all[idx * kPageSize + 7] != media_byte(idx);
  CHECK(wrong == 0);
  CHECK(c->stats().hits + c->stats().misses == kPages);
  CHECK(c->stats().hits >= 1);
}

TEST_CASE("page cache: with every page dirty a writer waits until a flush frees pages",
          "[mm][cache]") {
  auto c = make_cache(PageCache::kMinPages);
  Media m;
  auto f = c->open(1, 0);
  std::promise<void> asked;
  std::atomic<bool> armed{false};
  c->set_pressure_hook([&] {
    if (armed.exchange(false)) asked.set_value();
  });
  for (uint64_t idx = 0; idx < c->capacity(); idx++)
    put(*c, *f, idx * kPageSize, bytes(kPageSize, 'd'), m.miss());
  REQUIRE(c->stats().dirty_pages == c->capacity());
  REQUIRE(c->stats().pressure_waits == 0);

  armed = true;
  std::string more = bytes(kPageSize, 'm');
  auto writer = std::async(std::launch::async, [&] {
    return c->write(*f, c->capacity() * kPageSize, reinterpret_cast<const uint8_t*>(more.data()),
                    kPageSize, 2, true, m.miss());
  });
  // The writer asks for writeback and waits for it: this thread is the flusher.
  CHECK(asked.get_future().wait_for(5s) == std::future_status::ready);
  CHECK(writer.wait_for(200ms) == std::future_status::timeout);
  CHECK(c->stats().pressure_waits > 0);
  flush(*c, *f);
  REQUIRE(writer.wait_for(1s) == std::future_status::ready);
  REQUIRE(writer.get().ok());
  CHECK(c->stats().cached_pages <= c->capacity());
  CHECK(c->stats().evictions >= 1);
  CHECK(get(*c, *f, c->capacity() * kPageSize, kPageSize, m) == more);
  c->set_pressure_hook({});
}

TEST_CASE("page cache: a writer reclaims a clean page at once though every one was read again",
          "[mm][cache]") {
  auto c = make_cache(PageCache::kMinPages);
  Media m;
  auto f = c->open(1, c->capacity() * kPageSize);
  std::atomic<int> pressed{0};
  c->set_pressure_hook([&] { pressed++; });
  for (uint64_t idx = 0; idx < c->capacity(); idx++)
    put(*c, *f, idx * kPageSize, bytes(kPageSize, 'c'), m.miss());
  flush(*c, *f);
  pressed = 0;  // filling the cache passed the dirty watermark
  // A read hits every page: all are marked referenced.
  get(*c, *f, 0, c->capacity() * kPageSize, m);
  REQUIRE(c->stats().cached_pages == c->capacity());
  REQUIRE(c->stats().hits == c->capacity());
  put(*c, *f, c->capacity() * kPageSize, bytes(kPageSize, 'r'), m.miss());
  CHECK(c->stats().pressure_waits == 0);
  CHECK(pressed == 0);
  CHECK(c->stats().evictions == 1);
  c->set_pressure_hook({});
}

TEST_CASE("page cache: truncation under quiesce drops pages past the size and zeros the tail",
          "[mm][cache]") {
  auto c = make_cache();
  Media m;
  m.zeros = true;  // pages not cached are holes
  auto f = c->open(1, 0);
  std::string data = bytes(4 * kPageSize, 't');
  put(*c, *f, 0, data, m.miss(true));
  REQUIRE(f->reserved_pages() == 4);

  const uint64_t cut = kPageSize + 100;
  {
    auto lk = c->quiesce(*f);
    CHECK(c->zero_locked(*f, cut, UINT64_MAX) == 2);  // pages 2 and 3, with their reservations
    c->set_size_locked(*f, cut);
  }
  CHECK(f->size() == cut);
  CHECK(f->reserved_pages() == 2);
  CHECK(c->dirty_pages() == 2);
  CHECK(c->stats().cached_pages == 2);
  CHECK(get(*c, *f, 0, 4 * kPageSize, m) == data.substr(0, cut));

  // Extended again, the cut range reads as zeros.
  {
    auto lk = c->quiesce(*f);
    c->set_size_locked(*f, 4 * kPageSize);
  }
  std::string want = data.substr(0, cut) + std::string(4 * kPageSize - cut, '\0');
  CHECK(get(*c, *f, 0, 4 * kPageSize, m) == want);

  // A range inside the file: partial ends zeroed in place, whole pages dropped.
  put(*c, *f, 0, data, m.miss(true));
  {
    auto lk = c->quiesce(*f);
    CHECK(c->zero_locked(*f, 100, 2 * kPageSize + 50) == 1);  // page 1 only
  }
  want = data;
  std::fill(want.begin() + 100, want.begin() + 2 * kPageSize + 50, '\0');
  CHECK(get(*c, *f, 0, 4 * kPageSize, m) == want);
  CHECK(c->dirty_pages() == 3);
}

TEST_CASE("page cache: a failed flush leaves its pages dirty and reserved", "[mm][cache]") {
  auto c = make_cache();
  Media m;
  auto f = c->open(1, 0);
  std::string data = bytes(2 * kPageSize, 'f');
  put(*c, *f, 0, data, m.miss(true), 42);
  FlushBatch b = c->take_dirty(*f);
  REQUIRE(b.pages.size() == 2);
  CHECK(c->finish_flush(*f, b, false, 1) == 0);
  CHECK(f->has_dirty());
  CHECK(c->dirty_pages() == 2);
  CHECK(f->reserved_pages() == 2);
  CHECK(f->mtime_ns() == 42);
  CHECK(c->stats().pmem_bytes == 0);
  CHECK_FALSE(c->forget(1));

  FlushBatch retry = c->take_dirty(*f);
  REQUIRE(retry.pages.size() == 2);
  CHECK(page_of(retry.pages[1]) == data.substr(kPageSize));
  CHECK(c->finish_flush(*f, retry, true, 1) == 2);
  CHECK_FALSE(f->has_dirty());
  CHECK(f->reserved_pages() == 0);
}

TEST_CASE("page cache: forget refuses a dirty file; discard drops it with its reservations",
          "[mm][cache]") {
  auto c = make_cache();
  Media m;
  auto f = c->open(1, 0);
  put(*c, *f, 0, bytes(3 * kPageSize, 'g'), m.miss(true));
  CHECK_FALSE(c->forget(1));
  CHECK(c->find(1) == f);
  CHECK(c->dirty_files().size() == 1);
  CHECK(c->discard(1) == 3);
  CHECK(c->find(1) == nullptr);
  CHECK(c->dirty_pages() == 0);
  CHECK(c->stats().cached_pages == 0);
  CHECK(c->dirty_files().empty());

  // A clean file is forgotten with its pages.
  auto g = c->open(2, kPageSize);
  put(*c, *g, 0, "clean after the flush", m.miss());
  flush(*c, *g);
  REQUIRE(c->stats().cached_pages == 1);
  CHECK(c->forget(2));
  CHECK(c->find(2) == nullptr);
  CHECK(c->stats().cached_pages == 0);
}

TEST_CASE("page cache: writing a page cached clean asks for a block reservation", "[mm][cache]") {
  // The filesystem decides whether a clean page still has its block (a punch or a zeroed
  // range may have taken it): the cache asks it again when the page is written.
  auto c = make_cache();
  Media m;
  m.zeros = true;
  auto f = c->open(1, 2 * kPageSize);
  put(*c, *f, 0, bytes(2 * kPageSize, 'h'), m.miss());
  flush(*c, *f);
  REQUIRE(c->stats().cached_pages == 2);
  uint64_t asked = m.nulls;
  put(*c, *f, 10, "dirty", m.miss(true));
  CHECK(m.nulls == asked + 1);
  CHECK(f->reserved_pages() == 1);
  CHECK(c->finish_flush(*f, c->take_dirty(*f), true, 1) == 1);
  CHECK(f->reserved_pages() == 0);
}
