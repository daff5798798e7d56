// tests/support/tensor_compare.h
// Tensor comparisons the Catch tests (through test_support.h) and the plain check programs of
// tests/cuda_emu share; torch only, no test framework.
#pragma once

#include <torch/torch.h>

#include <algorithm>

namespace mq::test {

/// Relative L2 distance |a - b| / |b|, in fp64 on the CPU (0 / 0 counts as 0).
inline double rel_l2(const torch::Tensor& a, const torch::Tensor& b) {
  const auto a64 = a.to(torch::kFloat64).cpu(), b64 = b.to(torch::kFloat64).cpu();
  return (a64 - b64).norm().item<double>() / std::max(b64.norm().item<double>(), 1e-30);
}

}  // namespace mq::test
