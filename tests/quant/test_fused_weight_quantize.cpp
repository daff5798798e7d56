// tests/quant/test_fused_weight_quantize.cpp
// The fused CUDA weight quantizer (quant/fused_weight_quantize.h), which WeightFakeQuantizer
// takes for fp32 weights on CUDA, against the composed ops it replaces (weight_min_max, the
// LWC sigmoids, choose_qparams, fake_quantize_composed): values bit for bit, with and without
// gradient recording; gradients of the weight and of both LWC bounds up to the order of the
// sums. Per tensor (1-D and 2-D, many blocks), per channel and per group; asymmetric and
// symmetric; 4, 8 and 16 bits; with the maximum and minimum tied at several elements (their
// gradient is shared). Skips where the build has no CUDA kernels or no GPU.
#include <catch2/catch.hpp>

#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/quant/fused_weight_quantize.h"
#include "mobilequant/quant/primitives.h"
#include "mobilequant/quant/weight_transform.h"
#include "tests/support/test_support.h"

namespace {

/// WeightFakeQuantizer's composed ops (the path CPU builds take), differentiable in w and in
/// the bounds.
torch::Tensor composed(const torch::Tensor& w, const mq::QuantSpec& spec, const torch::Tensor& up,
                       const torch::Tensor& low) {
  auto [mn, mx] = mq::weight_min_max(w, spec);  // [groups, 1] or [1]
  if (up.defined()) {
    mx = torch::sigmoid(up) * mx;
    mn = torch::sigmoid(low) * mn;
  }
  const mq::QParams p = mq::choose_qparams(mn, mx, spec.bits, spec.symmetric);
  return mq::fake_quantize_composed(mq::grouped_weight(w, spec), p).reshape(w.sizes());
}

/// An enabled weight spec.
mq::QuantSpec weight_spec(int64_t bits, bool symmetric, mq::Granularity granularity,
                          int64_t group_size = 0) {
  mq::QuantSpec spec;
  spec.enabled = true;
  spec.bits = bits;
  spec.symmetric = symmetric;
  spec.granularity = granularity;
  spec.group_size = group_size;
  return spec;
}

/// A quantizer on `dev` with random LWC bounds in [1, 4] when `lwc`; up / low get leaf copies
/// of the bounds for the composed ops (undefined without LWC).
mq::WeightFakeQuantizer lwc_quantizer(const mq::QuantSpec& spec, const std::vector<int64_t>& shape,
                                      bool lwc, at::Generator& gen, const torch::Device& dev,
                                      torch::Tensor& up, torch::Tensor& low) {
  mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(spec, shape, "test.weight"));
  if (lwc) {
    wq->enable_lwc();
    torch::NoGradGuard no_grad;
    wq->upbound_factor.copy_(torch::rand(wq->upbound_factor.sizes(), gen) * 3 + 1);
    wq->lowbound_factor.copy_(torch::rand(wq->lowbound_factor.sizes(), gen) * 3 + 1);
  }
  wq->to(dev);
  up = lwc ? wq->upbound_factor.detach().clone().requires_grad_(true) : torch::Tensor();
  low = lwc ? wq->lowbound_factor.detach().clone().requires_grad_(true) : torch::Tensor();
  return wq;
}

}  // namespace

TEST_CASE("Fused weight quantizer on CUDA equals the composed ops, values bit for bit",
          "[model]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  const auto dev = torch::Device(torch::kCUDA, 0);
  if (!mq::fused_weight_quantize_supported(torch::zeros({2, 2}, dev)))
    MQ_SKIP("this build has no fused CUDA kernels (MQ_CUDA_KERNELS)");
  auto gen = at::detail::createCPUGenerator(41);
  struct Case {
    std::vector<int64_t> shape;
    mq::Granularity granularity;
    int64_t group_size, bits;
  };
  const Case cases[] = {{{300}, mq::Granularity::kPerTensor, 0, 16},
                        {{64, 96}, mq::Granularity::kPerTensor, 0, 8},
                        {{512, 1100}, mq::Granularity::kPerTensor, 0, 8},  // 512 blocks
                        {{96, 200}, mq::Granularity::kPerChannel, 0, 8},
                        {{40, 2100}, mq::Granularity::kPerChannel, 0, 4},
                        {{48, 128}, mq::Granularity::kPerGroup, 32, 4}};
  for (const Case& c : cases) {
    for (const bool symmetric : {false, true}) {
      for (const bool lwc : {false, true}) {
        const mq::QuantSpec spec = weight_spec(c.bits, symmetric, c.granularity, c.group_size);
        INFO("shape " << c10::IntArrayRef(c.shape) << ", " << mq::to_string(c.granularity) << " "
                      << c.group_size << ", " << c.bits << " bits, symmetric " << symmetric
                      << ", LWC " << lwc);
        auto w = torch::randn(c.shape, gen) * 0.05 + 0.01;  // [shape], off-centre
        // Ties at the extremes: the maximum at three elements, the minimum at two, in the first
        // row (group) and, per tensor, in other rows too.
        auto flat = w.view({-1});
        const double hi = w.max().item<double>() + 0.01, lo = w.min().item<double>() - 0.02;
        const int64_t n = flat.numel();
        for (const int64_t i : {int64_t{0}, int64_t{3}, n - 1}) flat[i] = hi;
        for (const int64_t i : {int64_t{1}, n / 2}) flat[i] = lo;
        if (c.granularity == mq::Granularity::kPerGroup) flat[2] = hi;

        torch::Tensor up, low;
        auto wq = lwc_quantizer(spec, c.shape, lwc, gen, dev, up, low);
        const auto gy = torch::randn(c.shape, gen).to(dev);  // [shape]

        auto wr = w.to(dev).requires_grad_(true);
        auto want = composed(wr, spec, up, low);
        want.backward(gy);

        auto wf = w.to(dev).requires_grad_(true);
        auto got = wq(wf);
        REQUIRE(got.scalar_type() == torch::kFloat32);
        REQUIRE(torch::equal(got.detach().cpu(), want.detach().cpu()));
        {
          torch::NoGradGuard no_grad;
          REQUIRE(torch::equal(wq(wf.detach()).cpu(), want.detach().cpu()));
        }
        got.backward(gy);
        // The weight's gradient: the straight-through part is elementwise and exact; the tied
        // extremes add shares of d scale, a sum over the group taken in another order
        // (relative 1e-4 covers fp32 summation over ~560K terms).
        CHECK(mq::test::rel_l2(wf.grad(), wr.grad()) <= 1e-4);
        if (lwc) {
          CHECK(mq::test::rel_l2(wq->upbound_factor.grad(), up.grad()) <= 1e-4);
          CHECK(mq::test::rel_l2(wq->lowbound_factor.grad(), low.grad()) <= 1e-4);
        }
      }
    }
  }
}

TEST_CASE("Fused weight quantizer with the LET transform on CUDA equals the composed ops",
          "[model]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  const auto dev = torch::Device(torch::kCUDA, 0);
  if (!mq::fused_weight_quantize_supported(torch::zeros({2, 2}, dev)))
    MQ_SKIP("this build has no fused CUDA kernels (MQ_CUDA_KERNELS)");
  auto gen = at::detail::createCPUGenerator(43);
  struct Case {
    std::vector<int64_t> shape;
    mq::Granularity granularity;
    int64_t bits;
    int row_op;  // 0 none, 1 divide, 2 multiply
  };
  // Per tensor over many blocks and bands, per channel with rows longer than a block.
  const Case cases[] = {{{512, 1100}, mq::Granularity::kPerTensor, 8, 1},
                        {{96, 200}, mq::Granularity::kPerTensor, 4, 2},
                        {{130, 2100}, mq::Granularity::kPerChannel, 4, 1},
                        {{64, 96}, mq::Granularity::kPerChannel, 8, 0}};
  for (const Case& c : cases) {
    for (const bool symmetric : {false, true}) {
      for (const bool lwc : {false, true}) {
        for (const auto out_dtype : {torch::kFloat32, torch::kBFloat16}) {
          const mq::QuantSpec spec = weight_spec(c.bits, symmetric, c.granularity);
          INFO("shape " << c10::IntArrayRef(c.shape) << ", " << mq::to_string(c.granularity)
                        << ", " << c.bits << " bits, symmetric " << symmetric << ", LWC " << lwc
                        << ", row op " << c.row_op << ", out " << out_dtype);
          const int64_t rows = c.shape[0], cols = c.shape[1];
          auto w = (torch::randn(c.shape, gen) * 0.05 + 0.01).to(dev);  // [rows, cols], frozen
          auto col = (torch::rand({cols}, gen) + 0.5).to(dev);           // [cols]
          auto row = c.row_op == 0 ? torch::Tensor() : (torch::rand({rows}, gen) + 0.5).to(dev);
          // Tied transformed maximum: equal weights in one row at columns of equal factor.
          {
            torch::NoGradGuard no_grad;
            col[3] = col[0];
            w[0][0] = 2.0;
            w[0][3] = 2.0;
          }
          torch::Tensor up, low;
          auto wq = lwc_quantizer(spec, c.shape, lwc, gen, dev, up, low);
          const auto gy = torch::randn(c.shape, gen).to(dev).to(out_dtype);  // [rows, cols]
          const auto leaf = [](const torch::Tensor& f) {
            return f.defined() ? f.detach().clone().requires_grad_(true) : f;
          };
          const mq::WeightTransform tr{leaf(col), leaf(row), c.row_op == 1};
          auto want = composed(mq::transform_weight(w, tr), spec, up, low).to(out_dtype);
          want.backward(gy);

          const mq::WeightTransform tf{leaf(col), leaf(row), c.row_op == 1};
          REQUIRE(mq::fused_weight_quantize_supported(w, tf));
          auto got = wq->forward_transformed(w, tf, out_dtype);
          REQUIRE(got.scalar_type() == out_dtype);
          REQUIRE(torch::equal(got.detach().cpu(), want.detach().cpu()));
          {
            torch::NoGradGuard no_grad;
            REQUIRE(torch::equal(wq->forward_transformed(w, tf, out_dtype).cpu(),
                                 want.detach().cpu()));
          }
          got.backward(gy);
          // Sums over a row (up to 2100 terms) or a column (up to 512) in another order, and
          // the LWC chain through d scale, a sum over the group: relative 1e-4 as above.
          CHECK(mq::test::rel_l2(tf.col.grad(), tr.col.grad()) <= 1e-4);
          if (row.defined()) CHECK(mq::test::rel_l2(tf.row.grad(), tr.row.grad()) <= 1e-4);
          if (lwc) {
            CHECK(mq::test::rel_l2(wq->upbound_factor.grad(), up.grad()) <= 1e-4);
            CHECK(mq::test::rel_l2(wq->lowbound_factor.grad(), low.grad()) <= 1e-4);
          }
        }
      }
    }
  }
}
