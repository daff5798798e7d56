// tests/quant/test_fused_fake_quantize.cpp
// The fused CUDA fake quantization (quant/fused_fake_quantize.h) computes the same bits as the
// composed torch ops (primitives.h's fake_quantize_composed), for fp32/bf16/fp16 inputs, per
// tensor and per channel, with values on code boundaries and ties; fake_quantize takes it on
// CUDA. Its autograd function gives dx bit for bit and d scale / d offset within the fp32
// summation bound. Skips where the build has no CUDA kernels or no GPU.
#include <catch2/catch.hpp>

#include "mobilequant/quant/fused_fake_quantize.h"
#include "mobilequant/quant/primitives.h"
#include "tests/support/test_support.h"

namespace {

/// The reference: the composed ops with round_ste (primitives' fake_quantize_composed).
torch::Tensor composed(const torch::Tensor& x, const mq::QParams& p) {
  torch::NoGradGuard no_grad;
  return mq::fake_quantize_composed(x, p);
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

namespace {

/// Gradients of sum(y * gy) for the composed ops with per-element leaves: scale and offset
/// expanded to x's shape, so autograd returns every term of the sums (no summation).
struct Terms {
  torch::Tensor gx, gs, go;  // [x] each
};
Terms composed_terms(const torch::Tensor& x, const mq::QParams& p, const torch::Tensor& gy) {
  torch::AutoGradMode on(true);
  auto xr = x.detach().clone().requires_grad_(true);
  auto s = p.scale.detach().expand(x.sizes()).clone().requires_grad_(true);
  auto o = p.offset.detach().expand(x.sizes()).clone().requires_grad_(true);
  auto y = mq::fake_quantize_composed(xr, mq::QParams{s, o, p.qmin, p.qmax});
  y.backward(gy);
  return {xr.grad(), s.grad(), o.grad()};
}

/// Sums `terms` [x] down to the shape of `param` the way broadcasting reduced it.
torch::Tensor sum_like(const torch::Tensor& terms, const torch::Tensor& param) {
  if (param.numel() == 1) return terms.sum().reshape(param.sizes());
  if (param.dim() == 2) return terms.sum(-1, /*keepdim=*/true);  // per row [rows, 1]
  return terms.reshape({-1, terms.size(-1)}).sum(0);              // per channel [C]
}

}  // namespace

TEST_CASE("Fused learnable fake quantization on CUDA: dx bit for bit, scale and offset "
          "gradients within the fp32 summation bound", "[model]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  const auto dev = torch::Device(torch::kCUDA, 0);
  if (!mq::fused_fake_quantize_supported(torch::zeros({1}, dev)))
    MQ_SKIP("this build has no fused CUDA kernels (MQ_CUDA_KERNELS)");
  auto gen = at::detail::createCPUGenerator(23);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (const int64_t bits : {4, 8, 16}) {
      for (const char* layout : {"tensor", "row", "channel"}) {
        INFO("dtype " << dtype << ", " << bits << " bits, per " << layout);
        auto x = torch::randn({48, 40}, gen) * 3;  // [48, 40]
        torch::Tensor mn, mx;                      // [], [48, 1] or [40]
        if (std::string(layout) == "tensor") {
          mn = x.min();
          mx = x.max();
        } else if (std::string(layout) == "row") {
          mn = x.amin(1, true);
          mx = x.amax(1, true);
        } else {
          mn = x.amin(0);
          mx = x.amax(0);
        }
        mq::QParams p = mq::choose_qparams(mn * 0.7, mx * 0.7, bits, false);  // clipping
        p.offset = p.offset + 0.25;                                           // drifted
        auto xd = x.to(dtype).to(dev);
        auto gy = torch::randn({48, 40}, gen).to(dtype).to(dev);  // [48, 40]
        mq::QParams pd{p.scale.to(dev), p.offset.to(dev), p.qmin, p.qmax};
        const Terms want = composed_terms(xd, pd, gy);

        auto xr = xd.clone().requires_grad_(true);
        auto s = pd.scale.clone().requires_grad_(true);
        auto o = pd.offset.clone().requires_grad_(true);
        auto y = mq::fused_fake_quantize_learnable(xr, s, o, p.qmin, p.qmax);
        REQUIRE(y.scalar_type() == dtype);
        REQUIRE(torch::equal(y.detach().cpu(), composed(xd, pd).cpu()));
        y.backward(gy);
        REQUIRE(xr.grad().scalar_type() == dtype);
        REQUIRE(torch::equal(xr.grad().cpu(), want.gx.cpu()));
        // Two fp32 sums of the same n terms differ by at most 2 (n - 1) u sum|t| (u = 2^-24).
        const double n = static_cast<double>(x.numel());
        for (const auto& [got, terms] : {std::pair{s.grad(), want.gs}, std::pair{o.grad(), want.go}}) {
          REQUIRE(got.sizes() == pd.scale.sizes());
          const auto ref = sum_like(terms.to(torch::kFloat64), pd.scale).cpu();
          const auto bound = sum_like(terms.abs().to(torch::kFloat64), pd.scale).cpu() *
                             (2 * (n - 1) * std::ldexp(1.0, -24));
          const auto err = (got.to(torch::kFloat64).cpu() - ref).abs();
          REQUIRE((err <= bound).all().item<bool>());
        }
      }
    }
  }
}
