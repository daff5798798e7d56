// mobilequant/config/quant_spec.h
// How one tensor is quantized: bit-width, symmetry, granularity, on/off (paper eq. 2-4;
// reference-implementation.md §2-§3). QuantConfig (config/quant_config.h) holds one per site.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/field_visitor.h"

namespace mq {

/// Which elements share one scale and offset.
enum class Granularity {
  kPerTensor,   ///< "per_tensor": one (scale, offset)
  kPerChannel,  ///< "per_channel": one per output channel (weights: rows; activations: last dim)
  kPerGroup,    ///< "per_group": one per `group_size` consecutive inputs of a weight row
};
/// "per_tensor", "per_channel" or "per_group".
const char* to_string(Granularity g);
/// Every Granularity, for parse_enum.
template <>
struct EnumValues<Granularity> {
  /// Every Granularity.
  static const std::vector<Granularity>& values();
};

/// How one tensor is quantized (paper eq. 2-4).
struct QuantSpec {
  bool enabled = true;                               ///< false: the site stays in float
  int64_t bits = 8;                                  ///< 2..16
  bool symmetric = false;                            ///< signed grid, zero offset
  Granularity granularity = Granularity::kPerTensor; ///< see Granularity
  int64_t group_size = 0;                            ///< per_group only: inputs per group (> 0)

  /// Smallest code: 0 (asymmetric) or -2^(bits-1) (symmetric).
  int64_t qmin() const;
  /// Largest code: 2^bits - 1 (asymmetric) or 2^(bits-1) - 1 (symmetric).
  int64_t qmax() const;
  /// Throws mq::Error "<where>: bits: got 17, expected 2..16" etc. when bits are outside 2..16,
  /// group_size is set without per_group or missing with it.
  void validate(const std::string& where) const;
  /// e.g. "8-bit asym per_tensor", "4-bit sym per_group(128)", "off".
  std::string describe() const;

  /// The one field list (config/field_visitor.h).
  template <class V>
  void for_each_field(V& v) {
    v("enabled", enabled, "false leaves the site in float");
    v("bits", bits, "Bit-width, 2..16");
    v("symmetric", symmetric, "Signed grid with zero offset");
    v("granularity", granularity, "per_tensor, per_channel or per_group");
    v("group_size", group_size, "per_group: inputs per group");
  }
};

}  // namespace mq
