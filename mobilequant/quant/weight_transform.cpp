// mobilequant/quant/weight_transform.cpp
#include "mobilequant/quant/weight_transform.h"

#include "mobilequant/core/error.h"

namespace mq {

torch::Tensor transform_weight(const torch::Tensor& w, const WeightTransform& t) {
  if (!t.any()) return w;
  MQ_CHECK(w.dim() == 2, "weight transform: expected a 2-D weight, got shape ", w.sizes());
  MQ_CHECK(!t.col.defined() || (t.col.dim() == 1 && t.col.size(0) == w.size(1)),
           "weight transform: column factor of shape ", t.col.sizes(), " for a weight of shape ",
           w.sizes(), " (expected [", w.size(1), "])");
  MQ_CHECK(!t.row.defined() || (t.row.dim() == 1 && t.row.size(0) == w.size(0)),
           "weight transform: row factor of shape ", t.row.sizes(), " for a weight of shape ",
           w.sizes(), " (expected [", w.size(0), "])");
  torch::Tensor out = t.col.defined() ? w * t.col.unsqueeze(0) : w;  // [out, in]
  if (t.row.defined())
    out = t.row_divides ? out / t.row.unsqueeze(1) : out * t.row.unsqueeze(1);  // [out, in]
  return out;
}

}  // namespace mq
