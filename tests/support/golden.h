// tests/support/golden.h
// The transformers golden file of tests/golden (make_golden.py writes it): where it is,
// its tensors by key, and running a model on one of its input batches. Shared by the
// parity tests on CPU (test_hf_parity.cpp) and on CUDA (test_cuda_parity.cpp).
#pragma once

#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/decoder.h"
#include "tests/support/test_support.h"

namespace mq::test {

/// The input batches of every base model: unpadded, right-padded, left-padded.
inline constexpr const char* kGoldenCases[] = {"unpadded", "right_padded", "left_padded"};

/// tests/golden: the tiny models and hf_parity_golden.safetensors.
inline std::filesystem::path golden_dir() { return source_dir() / "tests" / "golden"; }

/// hf_parity_golden.safetensors (dtypes kept), read once per process.
inline const TensorMap& golden() {
  static const TensorMap g =
      read_safetensors((golden_dir() / "hf_parity_golden.safetensors").string(), true);
  return g;
}

/// The golden tensor `key` (e.g. "tiny-llama.unpadded.logits"); a missing key fails the test.
inline const torch::Tensor& golden_at(const std::string& key) {
  auto it = golden().find(key);
  INFO("golden key " << key);
  REQUIRE(it != golden().end());
  return it->second;
}

/// Our logits and transformers' on one golden batch, at real (non-padding) tokens only.
struct GoldenLogits {
  torch::Tensor got;   ///< [N, V] fp32 on the CPU: ours, whatever the model's device and dtype
  torch::Tensor want;  ///< [N, V] fp32: transformers' (golden)
};

/// Runs `model` (on any device, any dtype) on batch `prefix`.`case_name` of the golden file
/// and pairs its logits with `expected_prefix`'s for that batch. The unpadded batch runs
/// without a mask (the plain causal path), the padded ones with theirs.
inline GoldenLogits run_golden_case(CausalLm& model, const std::string& prefix,
                                    const std::string& case_name,
                                    const std::string& expected_prefix) {
  torch::NoGradGuard no_grad;
  const auto device = model->parameters().front().device();
  const auto& ids = golden_at(prefix + "." + case_name + ".input_ids");         // [B, T]
  const auto& mask = golden_at(prefix + "." + case_name + ".attention_mask");   // [B, T]
  const auto& want = golden_at(expected_prefix + "." + case_name + ".logits");  // [B, T, V]
  auto got = case_name == "unpadded" ? model->forward(ids.to(device))
                                     : model->forward(ids.to(device), mask.to(device));
  got = got.to(torch::kCPU, torch::kFloat32);                                   // [B, T, V]
  REQUIRE(got.sizes() == want.sizes());
  auto real = mask.to(torch::kBool);                                            // [B, T]
  return {got.index({real}), want.index({real})};                               // [N, V] each
}

}  // namespace mq::test
