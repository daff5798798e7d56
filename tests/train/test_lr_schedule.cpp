// tests/train/test_lr_schedule.cpp
// The per-group cosine schedule (train/lr_schedule.h) against its formula, written out here:
// lr * s / w during warm-up, then min + (lr - min) * (1 + cos(pi * (s - w) / (S - w))) / 2.
#include <catch2/catch.hpp>

#include <cmath>

#include "mobilequant/train/lr_schedule.h"

TEST_CASE("Cosine schedule: warm-up, decay from lr to min_lr, then min_lr", "[unit]") {
  const mq::CosineSchedule s{1e-2, 1e-3, 4, 20};
  CHECK(s.at(0) == 0.0);
  CHECK(s.at(2) == Approx(0.5e-2).epsilon(1e-12));
  CHECK(s.at(4) == Approx(1e-2).epsilon(1e-12));  // peak right after warm-up
  for (int64_t k = 4; k <= 20; ++k) {
    const double want = 1e-3 + (1e-2 - 1e-3) * 0.5 * (1 + std::cos(M_PI * (k - 4) / 16.0));
    CHECK(s.at(k) == Approx(want).epsilon(1e-12));
  }
  CHECK(s.at(12) == Approx(5.5e-3).epsilon(1e-12));  // halfway: the mean of lr and min_lr
  CHECK(s.at(25) == 1e-3);
  const mq::CosineSchedule flat{1e-3, 1e-3, 0, 10};  // the reference's default LET schedule
  for (int64_t k = 0; k < 12; ++k) CHECK(flat.at(k) == Approx(1e-3).epsilon(1e-12));
}
