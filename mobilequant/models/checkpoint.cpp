// mobilequant/models/checkpoint.cpp
#include "mobilequant/models/checkpoint.h"

#include "mobilequant/core/error.h"

namespace mq {

torch::Tensor unpermute_rotary_rows(const torch::Tensor& w, int64_t n_heads) {
  const int64_t rows = w.size(0);
  MQ_CHECK(rows % (2 * n_heads) == 0, "unpermute_rotary_rows: ", rows,
           " rows do not split into ", n_heads, " heads of even width");
  const int64_t half = rows / n_heads / 2;
  auto rest = w.sizes().slice(1).vec();
  // Meta layout per head: rows (2i, 2i+1) form pair i. HF layout: (i, i+half).
  std::vector<int64_t> shape{n_heads, half, 2};
  shape.insert(shape.end(), rest.begin(), rest.end());
  std::vector<int64_t> flat{rows};
  flat.insert(flat.end(), rest.begin(), rest.end());
  return w.reshape(shape).transpose(1, 2).reshape(flat).contiguous();
}

}  // namespace mq
