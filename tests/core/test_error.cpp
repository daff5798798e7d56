// tests/core/test_error.cpp: MQ_CHECK throws mq::Error with the streamed message.
#include <catch2/catch.hpp>

#include "mobilequant/core/error.h"

TEST_CASE("MQ_CHECK throws mq::Error carrying every message part", "[unit]") {
  int got = 3;
  REQUIRE_NOTHROW([&] { MQ_CHECK(got == 3, "unused"); }());
  REQUIRE_THROWS_WITH([&] { MQ_CHECK(got == 4, "key 'x': expected ", 4, ", got ", got); }(),
                      "key 'x': expected 4, got 3");
  REQUIRE_THROWS_AS([&] { MQ_CHECK(false, "x"); }(), mq::Error);
}
