// mobilequant/train/lr_schedule.cpp
#include "mobilequant/train/lr_schedule.h"

#include <cmath>

namespace mq {

double CosineSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps)
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (step >= total_steps) return min_lr;
  const double span = static_cast<double>(total_steps - warmup_steps);
  const double ratio = span > 0 ? static_cast<double>(step - warmup_steps) / span : 1.0;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return min_lr + coeff * (lr - min_lr);
}

}  // namespace mq
