// tests/quant/test_fused_softmax_quantize.cpp
// The fused quantized softmax (quant/fused_softmax_quantize.h) against the composed ops it
// replaces (ForwardHooks::attention_probs: fake quantization of the scores, scale, causal
// mask, fp32 softmax, cast, fake quantization of the probabilities), forward and backward, for
// fp32 and bf16 scores, 8- and 16-bit quantizers with drifted offsets, and a float site. The
// two differ only in the softmax's summation order, which can move a probability by an ulp
// and, rarely, across a rounding or code boundary. Skips where the build has no CUDA kernels
// or no GPU.
#include <catch2/catch.hpp>

#include <limits>

#include "mobilequant/quant/fused_softmax_quantize.h"
#include "mobilequant/quant/primitives.h"
#include "tests/support/test_support.h"

namespace {

/// The composed ops, differentiable in scores and in the quantizers' scale/offset.
torch::Tensor composed(const torch::Tensor& scores, double scale, const mq::SoftmaxQuantizer& in,
                       const mq::SoftmaxQuantizer& out) {
  const int64_t t = scores.size(-1);
  auto fq = [](const torch::Tensor& x, const mq::SoftmaxQuantizer& q) {
    return q.enabled ? mq::fake_quantize_composed(x, mq::QParams{q.scale, q.offset, q.qmin, q.qmax})
                     : x;
  };
  auto s = fq(scores, in) * scale;                                            // [B, H, T, T]
  auto allowed = torch::ones({t, t}, torch::dtype(torch::kBool).device(scores.device())).tril();
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(s.to(torch::kFloat32), -1).to(scores.scalar_type());
  return fq(probs, out);                                                      // [B, H, T, T]
}

mq::SoftmaxQuantizer make_quantizer(bool enabled, int64_t bits, double mn, double mx,
                                    const torch::Device& dev) {
  mq::SoftmaxQuantizer q;
  if (!enabled) return q;
  auto p = mq::choose_qparams(torch::full({}, mn), torch::full({}, mx), bits, false);
  q.enabled = true;
  q.scale = p.scale.to(dev).requires_grad_(true);
  q.offset = (p.offset + 0.25).to(dev).requires_grad_(true);  // drifted, as learned
  q.qmin = p.qmin;
  q.qmax = p.qmax;
  return q;
}

}  // namespace

TEST_CASE("Fused quantized softmax on CUDA matches the composed ops forward and backward",
          "[model]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  const auto dev = torch::Device(torch::kCUDA, 0);
  if (!mq::fused_softmax_quantize_supported(torch::zeros({1, 1, 4, 4}, dev)))
    MQ_SKIP("this build has no fused CUDA kernels (MQ_CUDA_KERNELS)");
  auto gen = at::detail::createCPUGenerator(29);
  struct Case {
    torch::ScalarType dtype;
    int64_t t, in_bits, out_bits;
    bool in_on, out_on;
    double out_min = 0.0;  // > 0: the output quantizer maps probability 0 outside its codes
  };
  // T not a multiple of 16 bytes' worth of the dtype: the shared-memory kernels; otherwise
  // (at most 512 vectors: T <= 4096 in bf16, 2048 in fp32) the register kernels, which skip
  // the masked keys unless out_min > 0.
  const Case cases[] = {{torch::kFloat32, 37, 8, 8, false, false},
                        {torch::kFloat32, 37, 8, 8, true, true},
                        {torch::kFloat32, 300, 16, 8, true, true},
                        {torch::kBFloat16, 300, 8, 16, true, true},
                        {torch::kBFloat16, 129, 8, 8, false, true},
                        {torch::kFloat32, 256, 16, 8, true, true},
                        {torch::kFloat32, 64, 8, 8, false, false},
                        {torch::kBFloat16, 64, 8, 8, true, true},
                        {torch::kBFloat16, 520, 8, 16, true, true},
                        {torch::kBFloat16, 1024, 8, 8, true, true, 0.05},
                        {torch::kBFloat16, 2048, 8, 8, true, true}};
  for (const Case& c : cases) {
    INFO("dtype " << c.dtype << ", T " << c.t << ", in " << (c.in_on ? c.in_bits : 0)
                  << " bits, out " << (c.out_on ? c.out_bits : 0) << " bits from "
                  << c.out_min);
    auto x = (torch::randn({2, 3, c.t, c.t}, gen) * 6).to(c.dtype).to(dev);  // [2, 3, T, T]
    auto gy = torch::randn({2, 3, c.t, c.t}, gen).to(c.dtype).to(dev);       // [2, 3, T, T]
    const double scale = 0.125;
    auto in = make_quantizer(c.in_on, c.in_bits, -20.0, 18.0, dev);    // clips the tails
    auto out = make_quantizer(c.out_on, c.out_bits, c.out_min, 0.9, dev);

    auto xr = x.clone().requires_grad_(true);
    auto want = composed(xr, scale, in, out);
    want.backward(gy);
    std::vector<torch::Tensor> want_grads{xr.grad().clone()};
    for (auto* q : {&in, &out})
      if (q->enabled) {
        want_grads.push_back(q->scale.grad().clone());
        want_grads.push_back(q->offset.grad().clone());
        q->scale.mutable_grad().zero_();
        q->offset.mutable_grad().zero_();
      }

    auto xf = x.clone().requires_grad_(true);
    auto got = mq::fused_softmax_quantize(xf, scale, in, out);
    REQUIRE(got.scalar_type() == c.dtype);
    REQUIRE(got.sizes() == want.sizes());
    // Forward: at most one code step of the output quantizer (or 2 ulps of the dtype at 1
    // without one) anywhere; with a rounding after the softmax (a quantizer or bf16), such
    // moves on at most 1% of the elements (unrounded fp32 differs in the last bits often). In
    // bf16 the probability is rounded to bf16 before the output quantizer: an fp32 ulp moved
    // across a bf16 rounding boundary moves it by a bf16 ulp (at most 2^-8 below 1), which a
    // 16-bit quantizer's step does not cover; that ulp is added to the bound.
    const bool fp32 = c.dtype == torch::kFloat32;
    const double step = c.out_on ? out.scale.item<double>() + (fp32 ? 0.0 : std::ldexp(1.0, -8))
                                 : 2 * std::ldexp(1.0, fp32 ? -23 : -7);
    const auto diff = (got.detach().to(torch::kFloat64) - want.detach().to(torch::kFloat64)).abs();
    CHECK(diff.max().item<double>() <= step * (1 + 1e-6));
    if (c.out_on || !fp32)
      CHECK((diff > 0).to(torch::kFloat64).mean().item<double>() <= 0.01);
    got.backward(gy);
    std::vector<torch::Tensor> got_grads{xf.grad()};
    for (auto* q : {&in, &out})
      if (q->enabled) {
        got_grads.push_back(q->scale.grad());
        got_grads.push_back(q->offset.grad());
      }
    REQUIRE(got_grads.size() == want_grads.size());
    // Backward: relative L2 error of every gradient, 1e-4 in fp32 (summation order), 2e-2 in
    // bf16 (an ulp moved before a bf16 rounding moves the result by 2^-8 relative).
    // The output offset's gradient is a sum of -gy * scale over the elements whose code clamps
    // (rows whose probability is 1, among others); it can cancel to far below its terms, so it
    // is held to tol relative to the sum of their sizes, fp32 summation's own measure.
    const double tol = c.dtype == torch::kFloat32 ? 1e-4 : 2e-2;
    double offset_terms = 0.0;  // sum of |d out offset terms|
    if (c.out_on) {
      torch::NoGradGuard no_grad;
      const auto p = composed(x, scale, in, mq::SoftmaxQuantizer{}).to(torch::kFloat32);
      const auto code = torch::round(p / out.scale) + out.offset;            // [2, 3, T, T]
      const auto clamped = (code < static_cast<double>(out.qmin)) |
                           (code > static_cast<double>(out.qmax));          // [2, 3, T, T]
      offset_terms = (gy.to(torch::kFloat32).abs() * clamped).sum().item<double>() *
                     out.scale.item<double>();
    }
    for (size_t i = 0; i < got_grads.size(); ++i) {
      INFO("gradient " << i << " (0: scores, then scale/offset of the enabled quantizers)");
      const bool out_offset = c.out_on && i + 1 == got_grads.size();
      const double err = (got_grads[i].to(torch::kFloat64) - want_grads[i].to(torch::kFloat64))
                             .norm().item<double>();
      INFO("relative " << mq::test::rel_l2(got_grads[i], want_grads[i]) << ", absolute " << err
                       << ", offset terms " << offset_terms);
      CHECK((mq::test::rel_l2(got_grads[i], want_grads[i]) <= tol ||
             (out_offset && err <= tol * offset_terms)));
    }
  }
}
