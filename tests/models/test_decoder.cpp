// tests/models/test_decoder.cpp: the decoder's norms and attention softmax compute in fp32 as
// transformers does, and in fp64 for an fp64 model (the simulation's noise floor); the CPU's
// RoPE tables are reproducible bit for bit.
#include <cmath>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "mobilequant/models/decoder.h"

namespace {

/// Hooks that only observe: the default attention_probs with identity sites.
struct IdentityHooks : mq::ForwardHooks {
  torch::Tensor activation(int64_t, mq::ActSite, const torch::Tensor& x) override { return x; }
};

}  // namespace

TEST_CASE("norms and the attention softmax keep fp64 inputs in fp64, fp32 inputs in fp32",
          "[unit]") {
  auto gen = at::detail::createCPUGenerator(7);
  const double eps = 1e-5;
  // Tolerances: fp64 arithmetic on these sizes stays within 1e-13 relative of the fp64
  // formula; fp32 rounding (what the cast to fp32 did) is ~1e-7.
  constexpr double kFp64Tol = 1e-13;
  const torch::Tensor x = torch::randn({3, 5, 64}, gen, torch::kFloat64) * 3.0;  // [3, 5, 64]
  const torch::Tensor w = torch::rand({64}, gen, torch::kFloat64) + 0.5;         // [64]
  const torch::Tensor rms = x * torch::rsqrt(x.pow(2).mean(-1, true) + eps);    // [3, 5, 64]
  for (const mq::NormKind kind : {mq::NormKind::kRms, mq::NormKind::kRmsOnePlus}) {
    INFO("kind " << static_cast<int>(kind));
    const torch::Tensor want = kind == mq::NormKind::kRms ? w * rms : rms * (1.0 + w);  // [3, 5, 64]
    const torch::Tensor got = mq::NormImpl::apply(kind, eps, x, mq::NormWeights{w, {}});
    REQUIRE(got.scalar_type() == torch::kFloat64);
    CHECK(((got - want).abs() / want.abs().clamp_min(1e-300)).max().item<double>() < kFp64Tol);
    // fp32 inputs: the fp32 formula, bit for bit.
    const torch::Tensor xf = x.to(torch::kFloat32), wf = w.to(torch::kFloat32);
    const torch::Tensor rf = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
    const torch::Tensor want32 = kind == mq::NormKind::kRms ? wf * rf : rf * (1.0 + wf);
    CHECK(torch::equal(mq::NormImpl::apply(kind, eps, xf, mq::NormWeights{wf, {}}), want32));
  }
  // Attention probabilities [B, H, T, T] from scores, causal.
  IdentityHooks hooks;
  const torch::Tensor s = torch::randn({1, 2, 6, 6}, gen, torch::kFloat64) * 4.0;  // [1, 2, 6, 6]
  const torch::Tensor mask = torch::ones({6, 6}, torch::kBool).tril();
  const torch::Tensor p = hooks.attention_probs(0, s, 0.25, {});  // [1, 2, 6, 6]
  REQUIRE(p.scalar_type() == torch::kFloat64);
  const torch::Tensor want =
      torch::softmax((s * 0.25).masked_fill(mask.logical_not(), -INFINITY), -1);  // fp64
  CHECK((p - want).abs().max().item<double>() < kFp64Tol);
  const torch::Tensor s32 = s.to(torch::kFloat32);
  CHECK(torch::equal(hooks.attention_probs(0, s32, 0.25, {}),
                     torch::softmax((s32 * 0.25).masked_fill(mask.logical_not(), -INFINITY), -1)));
}

TEST_CASE("RoPE tables on the CPU are the double-precision cos and sin of the fp32 angles, "
          "rounded to fp32, bit for bit", "[unit]") {
  // LibTorch's own fp32 cos differs from this in the last place for some angles (on the
  // development CPU, 27,252 of SmolLM2's 8192 x 64 table entries), and whether it does can
  // depend on how its threads split the tensor; these tables must not (the integer model's
  // rotary tables and the simulation both come from here).
  const int64_t r = 64;
  const double theta = 100000.0;
  mq::RotaryEmbedding rope(r, theta);
  const torch::Tensor positions = torch::arange(4096, torch::kInt64).view({2, 2048});  // [2, 2048]
  const auto [cos, sin] = rope.tables(positions);                                   // [2, 1, 2048, 64]
  REQUIRE(cos.sizes() == torch::IntArrayRef({2, 1, 2048, r}));
  REQUIRE(cos.scalar_type() == torch::kFloat32);
  const torch::Tensor exps = torch::arange(0, r, 2, torch::kInt64).to(torch::kFloat32) / static_cast<float>(r);
  const torch::Tensor inv = 1.0 / torch::pow(theta, exps);                                  // [32] fp32
  const torch::Tensor ang = (positions.to(torch::kFloat32).unsqueeze(-1) * inv).contiguous();  // [2, 2048, 32]
  const float* a = ang.data_ptr<float>();
  const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  const float* cp = c.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  int64_t libtorch_differs = 0;
  const torch::Tensor lib_cos = ang.cos();  // [2, 2048, 32]
  const float* lc = lib_cos.data_ptr<float>();
  for (int64_t i = 0; i < ang.numel(); ++i) {
    const int64_t row = i / (r / 2), j = i % (r / 2);
    const auto want_c = static_cast<float>(std::cos(static_cast<double>(a[i])));
    const auto want_s = static_cast<float>(std::sin(static_cast<double>(a[i])));
    for (const int64_t half : {int64_t{0}, r / 2}) {
      REQUIRE(cp[row * r + half + j] == want_c);
      REQUIRE(sp[row * r + half + j] == want_s);
    }
    libtorch_differs += lc[i] != want_c;
  }
  WARN("LibTorch's fp32 cos differs from the tables in " << libtorch_differs << " of "
       << ang.numel() << " angles here");
}
