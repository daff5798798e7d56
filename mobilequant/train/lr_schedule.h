// mobilequant/train/lr_schedule.h
// The per-step learning rate of each parameter group (reference-implementation.md §4.1 step 8:
// `get_lr`, the nanoGPT form): linear warm-up from 0 over `warmup_steps`, then a cosine from
// `lr` down to `min_lr` at `total_steps`, and `min_lr` after that.
#pragma once

#include <cstdint>

namespace mq {

/// One group's schedule.
struct CosineSchedule {
  double lr = 1e-3;          ///< peak learning rate
  double min_lr = 1e-3;      ///< learning rate at the end of the decay
  int64_t warmup_steps = 0;  ///< linear warm-up steps (0: none)
  int64_t total_steps = 1;   ///< steps over which the cosine decays (the run's optimizer steps)

  /// The learning rate at optimizer step `step` (0-based).
  double at(int64_t step) const;
};

}  // namespace mq
