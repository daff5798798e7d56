// tests/quant/test_fused_fake_quantize.cpp
// The fused CUDA fake quantization (quant/fused_fake_quantize.h) computes the same bits as the
// composed torch ops of primitives.h's gradient path, for fp32/bf16/fp16 inputs, per tensor and
// per channel, with values on code boundaries and ties; fake_quantize takes it on CUDA when no
// gradient is recorded. Skips where the build has no CUDA kernels or no GPU.
#include <catch2/catch.hpp>

#include "mobilequant/quant/fused_fake_quantize.h"
#include "mobilequant/quant/primitives.h"
#include "tests/support/test_support.h"

namespace {

/// The reference: primitives' gradient path (round_ste and out-of-place ops), forced by
/// recording a gradient on x.
torch::Tensor composed(const torch::Tensor& x, const mq::QParams& p) {
  torch::AutoGradMode on(true);
  auto xr = x.detach().clone().requires_grad_(x.is_floating_point());
  return mq::fake_quantize(xr, p).detach();
}

}  // namespace

TEST_CASE("Fused fake quantization on CUDA equals the composed ops bit for bit", "[model]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  const auto dev = torch::Device(torch::kCUDA, 0);
  if (!mq::fused_fake_quantize_supported(torch::zeros({1}, dev)))
    MQ_SKIP("this build has no fused CUDA kernels (MQ_CUDA_KERNELS)");
  auto gen = at::detail::createCPUGenerator(17);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    for (const int64_t bits : {4, 8, 16}) {
      for (const bool per_channel : {false, true}) {
        INFO("dtype " << dtype << ", " << bits << " bits, per_channel " << per_channel);
        auto x = torch::randn({3, 37, 24}, gen) * 3;                           // [3, 37, 24]
        x.index_put_({0, 0}, torch::linspace(-2, 2, 24));                      // boundaries
        const int64_t c = per_channel ? 24 : 1;
        auto mn = x.amin(per_channel ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0, 1, 2});
        auto mx = x.amax(per_channel ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0, 1, 2});
        mq::QParams p = mq::choose_qparams(mn * 0.8, mx * 0.8, bits, false);   // some clipping
        p.offset = p.offset + 0.25;                                             // drifted (learned)
        REQUIRE(p.scale.numel() == c);
        // Ties: values at exact half-steps of the grid.
        x.index_put_({1, 0}, (torch::arange(24).to(torch::kFloat32) + 0.5) * p.scale.flatten()[0]);
        auto xd = x.to(dtype).to(dev);
        mq::QParams pd{p.scale.to(dev), p.offset.to(dev), p.qmin, p.qmax};
        auto want = composed(xd, pd);
        torch::NoGradGuard no_grad;
        auto fused = mq::fused_fake_quantize(xd, pd.scale, pd.offset, p.qmin, p.qmax);
        auto via_api = mq::fake_quantize(xd, pd);  // takes the fused kernel
        REQUIRE(fused.scalar_type() == dtype);
        REQUIRE(torch::equal(fused.cpu(), want.cpu()));
        REQUIRE(torch::equal(via_api.cpu(), want.cpu()));
      }
    }
  }
}
