// mobilequant/core/tensor_map.h: tensors by (Hugging Face) name.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace mq {
/// Tensors by name, ordered so that listings and errors are deterministic.
using TensorMap = std::map<std::string, torch::Tensor>;
}  // namespace mq
