// mobilequant/runtime/fixed_point.h
// The integer model's fixed-point multipliers m = M 2^-n (docs/integer-model.md,
// "Requantization"): the limits the export writes (export/int_model.h), the linter and the
// runtime's loader check, and the kernels (int_ops.h) rely on. One definition for all three.
#pragma once

#include <cstdint>

namespace mq::rt {

/// The smallest shift of every multiplier but a residual add's: |m| < 2^31, so that a
/// multiplier applies to int32 accumulators in 64-bit arithmetic (PreparedMultiplier).
inline constexpr int32_t kMinShift = 32;
/// The largest shift: beyond it m < 2^-95 is written as 0 (zero for any 94-bit product,
/// requant_wide's inputs).
inline constexpr int32_t kMaxShift = 157;
/// The smallest shift of a residual-add multiplier (m up to 2^93; n <= 0 is a left shift).
inline constexpr int32_t kResidualAddMinShift = -30;

/// True for a multiplier M of the format: |M| in [2^62, 2^63) (62 correct bits), or 0.
inline bool multiplier_in_range(int64_t m) {
  return m == 0 || (m != INT64_MIN && (m < 0 ? -m : m) >= (int64_t{1} << 62));
}

}  // namespace mq::rt
