// tests/cuda_emu/emu_weight_kernels.cpp
// The kernels of mobilequant/quant/fused_weight_quantize_cuda.cu, run on the CPU under the
// CUDA emulation (emu.h), against the composed torch ops as CUDA runs them (a division by the
// host scalar qmax is a multiplication by fp32(1 / qmax) there): values bit for bit, the
// weight's gradient within relative 1e-5 and the LWC sigmoids' within 1e-4 (sums in another
// order), per tensor (many blocks) and per row, asymmetric and symmetric, with and without
// LWC, with the maximum and minimum tied at several elements. Exit status 0 when all hold.
// ctest label cuda-emu (`scripts/test.sh cuda-emu`).
#include "fused_weight_quantize_cuda.inc"

#include <torch/torch.h>

#include "tests/support/tensor_compare.h"

#include <cstdio>

namespace {

using namespace mq;
using mq::test::rel_l2;

struct Grads {
  torch::Tensor y, gw, g_up, g_low;
};

/// The composed ops of WeightFakeQuantizer (fake_quantizer.cpp, primitives.cpp) on the CPU,
/// with CUDA's division by a host scalar; the LWC sigmoids as leaves.
Grads composed(torch::Tensor wg, torch::Tensor su, torch::Tensor sl, bool per_row, bool sym,
               int64_t qmin, int64_t qmax, const torch::Tensor& gy) {
  wg = wg.clone().requires_grad_(true);
  torch::Tensor mn0, mx0;  // [groups, 1] or [1]
  if (per_row) {
    mn0 = wg.amin(-1, true);
    mx0 = wg.amax(-1, true);
  } else {
    mn0 = wg.flatten().amin(0).reshape({1});
    mx0 = wg.flatten().amax(0).reshape({1});
  }
  torch::Tensor mn = mn0, mx = mx0;
  if (su.defined()) {
    su = su.clone().reshape(mx0.sizes()).requires_grad_(true);
    sl = sl.clone().reshape(mn0.sizes()).requires_grad_(true);
    mx = su * mx0;
    mn = sl * mn0;
  }
  const auto inv = torch::scalar_tensor(1.0f / static_cast<float>(qmax));
  torch::Tensor scale, offset;
  if (sym) {
    scale = (torch::maximum(mn.abs(), mx.abs()) * inv).clamp(1e-5, 1e6);
    offset = torch::zeros_like(scale);
  } else {
    scale = ((mx - mn) * inv).clamp(1e-5, 1e6);
    offset = -torch::round(mn / scale);
  }
  const auto t = wg / scale;
  const auto q = ((torch::round(t) - t).detach() + t + offset)
                     .clamp(static_cast<double>(qmin), static_cast<double>(qmax));
  const auto y = (q - offset) * scale;  // [groups, g]
  y.backward(gy);
  Grads r{y.detach(), wg.grad(), {}, {}};
  if (su.defined()) {
    r.g_up = su.grad().flatten();
    r.g_low = sl.grad().flatten();
  }
  return r;
}

/// The kernels as fused_weight_quantize_forward/backward_cuda launch them.
Grads fused(const torch::Tensor& w, const torch::Tensor& su, const torch::Tensor& sl,
            bool per_row, const Codes& codes, const torch::Tensor& gy) {
  const int64_t rows = w.size(0), cols = w.size(1), n = w.numel();
  const int64_t groups = per_row ? rows : 1;
  const float* sup = su.defined() ? su.data_ptr<float>() : nullptr;
  const float* slp = sl.defined() ? sl.data_ptr<float>() : nullptr;
  auto y = torch::empty_like(w), gx = torch::empty_like(w);
  auto stats = torch::zeros({groups, kStats});
  auto d_su = torch::zeros({groups}), d_sl = torch::zeros({groups});
  const float* wp = w.data_ptr<float>();
  const float* gp = gy.data_ptr<float>();
  if (per_row) {
    const auto threads = static_cast<unsigned>(row_threads(cols));
    emu_launch(rows, threads, 0, forward_rows_kernel, wp, y.data_ptr<float>(),
               stats.data_ptr<float>(), cols, sup, slp, codes);
    emu_launch(rows, threads, 0, backward_rows_kernel, wp, gp, gx.data_ptr<float>(),
               static_cast<const float*>(stats.data_ptr<float>()), d_su.data_ptr<float>(),
               d_sl.data_ptr<float>(), cols, codes);
  } else {
    const int blocks = tensor_blocks(n);
    auto partial = torch::empty({2, blocks});
    emu_launch(blocks, kThreads, 0, min_max_partial_kernel, wp, n, partial.data_ptr<float>());
    emu_launch(1, kThreads, 0, params_tensor_kernel,
               static_cast<const float*>(partial.data_ptr<float>()), blocks,
               stats.data_ptr<float>(), sup, slp, codes);
    const float* st = stats.data_ptr<float>();
    emu_launch(blocks, kThreads, 0, apply_tensor_kernel, wp, y.data_ptr<float>(), n, st, codes);
    auto pf = torch::empty({blocks});
    auto pn = torch::empty({2, blocks}, torch::kInt);
    auto out = torch::empty({4});
    emu_launch(blocks, kThreads, 0, backward_partial_kernel, wp, gp, gx.data_ptr<float>(), n, st,
               pf.data_ptr<float>(), pn.data_ptr<int>(), codes);
    emu_launch(1, kThreads, 0, chain_tensor_kernel, static_cast<const float*>(pf.data_ptr<float>()),
               static_cast<const int*>(pn.data_ptr<int>()), blocks, st, out.data_ptr<float>(),
               codes);
    emu_launch(blocks, kThreads, 0, ties_tensor_kernel, wp, gx.data_ptr<float>(), n, st,
               static_cast<const float*>(out.data_ptr<float>()));
    d_su = out.narrow(0, 0, 1);
    d_sl = out.narrow(0, 1, 1);
  }
  return {y, gx, d_su, d_sl};
}

}  // namespace

int main() {
  auto gen = at::detail::createCPUGenerator(41);
  struct Case {
    int64_t rows, cols;
    bool per_row;
    int bits;
  };
  // Per tensor: one block, then 41 blocks of partials; per row: rows shorter than a block,
  // longer than a block, of one warp (per-group 32) and of part of one.
  const Case cases[] = {{1, 300, false, 16}, {40, 1100, false, 8}, {96, 200, true, 8},
                        {12, 2100, true, 4}, {192, 32, true, 4},   {5, 20, true, 8}};
  int failures = 0;
  for (const Case& c : cases) {
    for (const bool sym : {false, true}) {
      for (const bool lwc : {false, true}) {
        auto w = torch::randn({c.rows, c.cols}, gen) * 0.05 + 0.01;  // [rows, cols]
        auto flat = w.view({-1});
        const float hi = w.max().item<float>() + 0.01f, lo = w.min().item<float>() - 0.02f;
        const int64_t n = flat.numel();
        for (const int64_t i : {int64_t{0}, int64_t{3}, n - 1}) flat[i] = hi;  // tied maximum
        for (const int64_t i : {int64_t{1}, n / 2}) flat[i] = lo;              // tied minimum
        if (sym) flat[5] = -hi;
        const int64_t groups = c.per_row ? c.rows : 1;
        torch::Tensor su, sl;  // [groups]
        if (lwc) {
          su = torch::sigmoid(torch::rand({groups}, gen) * 3 + 1);
          sl = torch::sigmoid(torch::rand({groups}, gen) * 3 + 1);
        }
        const int64_t qmin = sym ? -(int64_t{1} << (c.bits - 1)) : 0;
        const int64_t qmax = sym ? (int64_t{1} << (c.bits - 1)) - 1 : (int64_t{1} << c.bits) - 1;
        const auto gy = torch::randn({c.rows, c.cols}, gen);
        const Grads want = composed(w, su, sl, c.per_row, sym, qmin, qmax, gy);
        const Grads got = fused(w, su, sl, c.per_row, make_codes(qmin, qmax, sym, lwc), gy);
        const bool same = torch::equal(got.y, want.y);
        const double e_w = rel_l2(got.gw, want.gw);
        const double e_up = lwc ? rel_l2(got.g_up, want.g_up) : 0.0;
        const double e_low = lwc ? rel_l2(got.g_low, want.g_low) : 0.0;
        const bool ok = same && e_w <= 1e-5 && e_up <= 1e-4 && e_low <= 1e-4;
        failures += !ok;
        std::printf("%s [%ld, %ld] %s %d bits%s%s: values %s, d w %.1e, d up %.1e, d low %.1e\n",
                    ok ? "ok  " : "FAIL", static_cast<long>(c.rows), static_cast<long>(c.cols),
                    c.per_row ? "per row" : "per tensor", c.bits, sym ? " symmetric" : "",
                    lwc ? " LWC" : "", same ? "equal" : "DIFFER", e_w, e_up, e_low);
      }
    }
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
