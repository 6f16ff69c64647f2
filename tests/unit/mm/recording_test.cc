// tests/unit/mm/recording_test.cc: the recording Persister logs what reaches the media,
// in order, and still applies it, so code above it reads its own writes.
#include <catch2/catch.hpp>

#include <cstring>

#include "mm/recording.h"
#include "mm/region.h"

namespace pmemfuse::mm {

TEST_CASE("recording persister logs stores, fills and fences in order", "[mm][recording]") {
  auto r = Region::anonymous(1 << 20);
  REQUIRE(r.ok());
  auto log = std::make_shared<PersistLog>();
  r->set_persister(std::make_unique<RecordingPersister>(r->base(), r->size(), log));
  const char msg[] = "hello";
  r->write(4096, msg, 5);
  r->zero(100, 3);
  r->fence();
  r->write(8000, msg + 1, 2);

  CHECK(std::memcmp(r->at(4096), "hello", 5) == 0);  // applied at once
  auto ev = log->events();
  REQUIRE(ev.size() == 4);
  CHECK(ev[0].kind == PersistEvent::Kind::kStore);
  CHECK(ev[0].off == 4096);
  CHECK(std::string(ev[0].data.begin(), ev[0].data.end()) == "hello");
  CHECK(ev[1].off == 100);
  CHECK(ev[1].data == std::vector<uint8_t>(3, 0));
  CHECK(ev[2].kind == PersistEvent::Kind::kFence);
  CHECK(ev[3].off == 8000);
  CHECK(std::string(ev[3].data.begin(), ev[3].data.end()) == "el");
  CHECK(log->size() == 4);
}

TEST_CASE("an anonymous copy holds the bytes, zero pages included", "[mm][recording]") {
  std::vector<uint8_t> img(3 * 4096 + 100, 0);
  img[5] = 1;
  img[3 * 4096 + 99] = 7;  // in the partial last page
  auto r = Region::anonymous_copy(img.data(), img.size());
  REQUIRE(r.ok());
  REQUIRE(r->size() == img.size());
  CHECK(std::memcmp(r->base(), img.data(), img.size()) == 0);
}

}  // namespace pmemfuse::mm
