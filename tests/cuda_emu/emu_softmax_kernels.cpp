// tests/cuda_emu/emu_softmax_kernels.cpp
// The kernels of mobilequant/quant/fused_softmax_quantize_cuda.cu, run on the CPU under the
// CUDA emulation (emu.h): the register kernels (a row's 16-byte vectors dealt to one warp, or
// to a block of 2 or 4 warps, the causal half skipped) against the composed torch ops, with the bounds of
// tests/quant/test_fused_softmax_quantize (one output code step, plus a bf16 ulp in bf16;
// gradients relative 1e-4 in fp32, 2e-2 in bf16, the output offset's against the size of its
// terms), and against the shared-memory kernels on the same input, which they equal up to the
// order of the sums. fp32 and bf16, a
// float site, 8- and 16-bit quantizers with drifted offsets, and an output quantizer that maps
// probability 0 outside its codes (the masked keys then count). Exit status 0 when all hold.
// ctest label cuda-emu (`scripts/test.sh cuda-emu`).
#include "fused_softmax_quantize_cuda.inc"

#include <torch/torch.h>

#include "tests/support/tensor_compare.h"

#include <cstdio>
#include <limits>

namespace {

using namespace mq;
using mq::test::rel_l2;

/// A per-tensor quantizer of [mn, mx] in `bits`, its offset drifted by 0.25 (as learned).
struct Q {
  bool on = false;
  float s = 1.0f, o = 0.0f;
  int64_t qmin = 0, qmax = 255;
};
Q make_q(int bits, double mn, double mx) {
  Q q;
  q.on = true;
  q.qmax = (int64_t{1} << bits) - 1;
  q.s = static_cast<float>((mx - mn) / static_cast<double>(q.qmax));
  q.o = -std::nearbyint(static_cast<float>(mn) / q.s) + 0.25f;
  return q;
}

torch::Tensor fq(const torch::Tensor& x, const Q& q, const torch::Tensor& s,
                 const torch::Tensor& o) {
  if (!q.on) return x;
  const auto t = x.to(torch::kFloat32) / s;
  const auto c = ((torch::round(t) - t).detach() + t + o)
                     .clamp(static_cast<double>(q.qmin), static_cast<double>(q.qmax));
  return ((c - o) * s).to(x.scalar_type());
}

/// kPer: the vectors a thread holds (the host code's by default); row_warps: the warps a row
/// takes (0: as the host code chooses).
template <typename T, int kPer = kVectorsPerThread>
bool check(torch::ScalarType dtype, int64_t heads, int64_t t, const Q& in, const Q& out,
           bool against_shared, at::Generator& gen, int row_warps = 0) {
  const int64_t rows = heads * t;
  const auto x = (torch::randn({1, heads, t, t}, gen) * 6).to(dtype);  // [1, H, T, T]
  const auto gy = torch::randn({1, heads, t, t}, gen).to(dtype);       // [1, H, T, T]
  const float scale = 0.125f;
  // The composed ops (ForwardHooks::attention_probs), differentiable in x and the quantizers.
  auto s_in = torch::scalar_tensor(in.s).requires_grad_(true);
  auto o_in = torch::scalar_tensor(in.o).requires_grad_(true);
  auto s_out = torch::scalar_tensor(out.s).requires_grad_(true);
  auto o_out = torch::scalar_tensor(out.o).requires_grad_(true);
  auto xr = x.clone().requires_grad_(true);
  const auto allowed = torch::ones({t, t}, torch::kBool).tril();
  const auto scores = (fq(xr, in, s_in, o_in) * static_cast<double>(scale))
                          .masked_fill(allowed.logical_not(),
                                       -std::numeric_limits<float>::infinity());
  const auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(dtype);
  const auto want = fq(probs, out, s_out, o_out);
  want.backward(gy);

  auto params = torch::tensor({in.s, in.o, out.s, out.o});  // [4]
  const QuantArgs qa = make_quant(params, {in.qmin, in.qmax, out.qmin, out.qmax}, {in.on, out.on});
  auto y = torch::empty_like(x), gx = torch::empty_like(x);
  auto partial = torch::zeros({4, rows});
  constexpr int kVec = 16 / sizeof(T);
  const int chosen = row_warps_for<T, kPer>(t, {x.data_ptr(), y.data_ptr(), gy.data_ptr(),
                                         gx.data_ptr()});
  if (chosen == 0 || row_warps < 0 || (row_warps > 0 && row_warps < chosen)) {
    std::printf("FAIL T %ld does not take the register kernels (on %d warps)\n",
                static_cast<long>(t), row_warps);
    return false;
  }
  const int w = row_warps > 0 ? row_warps : chosen;
  const T* xp = static_cast<const T*>(x.data_ptr());
  const T* gp = static_cast<const T*>(gy.data_ptr());
  const auto [grid, threads] = row_launch(rows, w);
  auto stats = torch::empty({2, rows});  // [2, rows]: the forward's row maxima and sums
  emu_launch(grid, threads, 0, softmax_quantize_forward_regs<T, kVec, kPer>, xp,
             static_cast<T*>(y.data_ptr()), stats.data_ptr<float>(), rows, static_cast<int>(t),
             scale, qa, w);
  emu_launch(grid, threads, 0, softmax_quantize_backward_regs<T, kVec, kPer>, xp, gp,
             static_cast<T*>(gx.data_ptr()), static_cast<const float*>(stats.data_ptr<float>()),
             partial.data_ptr<float>(), rows, static_cast<int>(t), scale, qa, w);
  const auto sums = partial.sum(1);  // [4]

  const bool fp32 = dtype == torch::kFloat32;
  const double step = out.on ? out.s + (fp32 ? 0.0 : std::ldexp(1.0, -8))
                             : 2 * std::ldexp(1.0, fp32 ? -23 : -7);
  const auto diff = (y.to(torch::kFloat64) - want.detach().to(torch::kFloat64)).abs();
  bool ok = diff.max().item<double>() <= step * (1 + 1e-6);
  if (out.on || !fp32) ok = ok && (diff > 0).to(torch::kFloat64).mean().item<double>() <= 0.01;
  const double tol = fp32 ? 1e-4 : 2e-2;
  double offset_terms = 0.0;  // sum of |terms| of d out offset: s |gy| where the code clamps
  if (out.on) {
    const auto code = torch::round(probs.detach().to(torch::kFloat32) / out.s) + out.o;
    const auto clamped = (code < static_cast<double>(out.qmin)) |
                         (code > static_cast<double>(out.qmax));
    offset_terms = (gy.to(torch::kFloat32).abs() * clamped).sum().item<double>() * out.s;
  }
  double errs[5] = {rel_l2(gx, xr.grad()), 0, 0, 0, 0};
  ok = ok && errs[0] <= tol;
  const torch::Tensor* leaves[4] = {&s_in, &o_in, &s_out, &o_out};
  for (int k = 0; k < 4; ++k) {
    if (!(k < 2 ? in.on : out.on)) continue;
    errs[k + 1] = rel_l2(sums[k], leaves[k]->grad());
    const double abs_err = std::abs(sums[k].item<double>() - leaves[k]->grad().item<double>());
    ok = ok && (errs[k + 1] <= tol || (k == 3 && abs_err <= tol * offset_terms));
  }
  std::printf("%s %s T %ld, %d warp(s) a row, in %s, out %s (offset %.2f): max diff %.2g (bound %.2g); grads %.1e "
              "%.1e %.1e %.1e %.1e\n",
              ok ? "ok  " : "FAIL", fp32 ? "fp32" : "bf16", static_cast<long>(t), w,
              in.on ? "on" : "off", out.on ? "on" : "off", out.o, diff.max().item<double>(), step,
              errs[0], errs[1], errs[2], errs[3], errs[4]);
  if (against_shared) {
    auto y2 = torch::empty_like(x), gx2 = torch::empty_like(x);
    auto partial2 = torch::zeros({4, rows});
    auto stats2 = torch::empty({2, rows});  // [2, rows]
    emu_launch(rows, kThreads, t * sizeof(float), softmax_quantize_forward_kernel<T>, xp,
               static_cast<T*>(y2.data_ptr()), stats2.data_ptr<float>(), rows, t, scale, qa);
    emu_launch(rows, kThreads, 2 * t * sizeof(float), softmax_quantize_backward_kernel<T>, xp, gp,
               static_cast<T*>(gx2.data_ptr()), partial2.data_ptr<float>(), rows, t, scale, qa);
    const auto d2 = (y.to(torch::kFloat64) - y2.to(torch::kFloat64)).abs();
    // Row maxima exactly; row sums up to the order of the sums.
    const bool stats_ok = torch::equal(stats[0], stats2[0]) &&
                          (stats[1] - stats2[1]).abs().max().item<double>() <=
                              1e-6 * stats2[1].abs().max().item<double>();
    const bool same_ok = d2.max().item<double>() <= step * (1 + 1e-6) &&
                         (!(out.on || !fp32) ||
                          (d2 > 0).to(torch::kFloat64).mean().item<double>() <= 0.01) &&
                         rel_l2(gx, gx2) <= tol && rel_l2(sums, partial2.sum(1)) <= tol &&
                         stats_ok;
    std::printf("%s   against the shared-memory kernels: values differ at %ld of %ld, d scores "
                "%.1e, sums %.1e\n",
                same_ok ? "ok  " : "FAIL", static_cast<long>((d2 > 0).sum().item<int64_t>()),
                static_cast<long>(d2.numel()), rel_l2(gx, gx2), rel_l2(sums, partial2.sum(1)));
    ok = ok && same_ok;
  }
  return ok;
}

}  // namespace

int main() {
  auto gen = at::detail::createCPUGenerator(29);
  const Q off;
  int failures = 0;
  failures += !check<float>(torch::kFloat32, 2, 64, off, off, true, gen);
  failures += !check<float>(torch::kFloat32, 2, 256, make_q(16, -20, 18), make_q(8, 0, 0.9), true,
                            gen);
  failures += !check<c10::BFloat16>(torch::kBFloat16, 2, 64, make_q(8, -20, 18), make_q(8, 0, 0.9),
                                    true, gen);
  failures += !check<c10::BFloat16>(torch::kBFloat16, 1, 520, make_q(8, -20, 18),
                                    make_q(16, 0, 0.9), true, gen);
  failures += !check<c10::BFloat16>(torch::kBFloat16, 2, 256, make_q(8, -20, 18),
                                    make_q(8, 0.05, 0.9), true, gen);
  failures += !check<c10::BFloat16>(torch::kBFloat16, 1, 1024, make_q(8, -20, 18),
                                    make_q(8, 0, 0.9), false, gen);
  // Rows on a block of 2 or 4 warps: the form rows longer than 32 * kPer vectors take.
  failures += !check<c10::BFloat16>(torch::kBFloat16, 1, 136, make_q(8, -20, 18),
                                    make_q(8, 0, 0.9), true, gen, 2);
  failures += !check<float>(torch::kFloat32, 1, 200, make_q(16, -20, 18), make_q(8, 0.05, 0.9),
                            true, gen, 4);
  // Eight vectors a thread: one warp.
  failures += !check<c10::BFloat16, 8>(torch::kBFloat16, 2, 256, make_q(8, -20, 18),
                                       make_q(8, 0, 0.9), true, gen);
  // Four vectors a thread: one warp, and rows over 2 warps.
  failures += !check<c10::BFloat16, 4>(torch::kBFloat16, 2, 256, make_q(8, -20, 18),
                                       make_q(16, 0, 0.9), true, gen);
  failures += !check<c10::BFloat16, 4>(torch::kBFloat16, 1, 1032, make_q(8, -20, 18),
                                       make_q(8, 0, 0.9), false, gen);
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
