// mobilequant/core/dtype.h: the floating dtype arithmetic runs in.
#pragma once

#include <torch/torch.h>

namespace mq {

/// fp64 for fp64 tensors (gradient checks, the fp64 simulation), else fp32 (fp32, bf16 and fp16
/// inputs compute in fp32).
inline torch::ScalarType compute_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

}  // namespace mq
