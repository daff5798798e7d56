// mobilequant/config/quant_spec.cpp
#include "mobilequant/config/quant_spec.h"

#include "mobilequant/core/error.h"

namespace mq {

const char* to_string(Granularity g) {
  switch (g) {
    case Granularity::kPerTensor: return "per_tensor";
    case Granularity::kPerChannel: return "per_channel";
    case Granularity::kPerGroup: return "per_group";
  }
  throw make_error("Granularity: invalid value ", static_cast<int>(g));
}

const std::vector<Granularity>& EnumValues<Granularity>::values() {
  static const std::vector<Granularity> all = {Granularity::kPerTensor, Granularity::kPerChannel,
                                               Granularity::kPerGroup};
  return all;
}

int64_t QuantSpec::qmin() const { return symmetric ? -(int64_t{1} << (bits - 1)) : 0; }

int64_t QuantSpec::qmax() const {
  return symmetric ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
}

void QuantSpec::validate(const std::string& where) const {
  MQ_CHECK(bits >= 2 && bits <= 16, where, ": bits: got ", bits, ", expected 2..16");
  if (granularity == Granularity::kPerGroup) {
    MQ_CHECK(group_size > 0, where, ": group_size: got ", group_size,
             ", expected a positive group size with granularity per_group");
  } else {
    MQ_CHECK(group_size == 0, where, ": group_size: got ", group_size,
             ", but granularity is ", to_string(granularity),
             " (group_size is for per_group only; leave it 0)");
  }
}

std::string QuantSpec::describe() const {
  if (!enabled) return "off";
  std::string out = std::to_string(bits) + "-bit " + (symmetric ? "sym " : "asym ") +
                    to_string(granularity);
  if (granularity == Granularity::kPerGroup) out += "(" + std::to_string(group_size) + ")";
  return out;
}

}  // namespace mq
