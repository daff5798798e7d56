// mobilequant/quant/fused_weight_quantize.cpp
// The host side: checks and the autograd function around the kernels of
// fused_weight_quantize_cuda.cu. Without MQ_HAVE_CUDA_KERNELS the fused path is never taken.
#include "mobilequant/quant/fused_weight_quantize.h"

#include <tuple>
#include <utility>

#include "mobilequant/core/error.h"
#include "mobilequant/quant/primitives.h"

namespace mq {

#ifdef MQ_HAVE_CUDA_KERNELS
/// Defined in fused_weight_quantize_cuda.cu: (y [groups, g], statistics [G, 8]) with G the
/// number of (scale, offset) pairs; sig_up / sig_low undefined without LWC.
std::pair<torch::Tensor, torch::Tensor> fused_weight_quantize_forward_cuda(
    const torch::Tensor& wg, const torch::Tensor& sig_up, const torch::Tensor& sig_low,
    int64_t qmin, int64_t qmax, bool symmetric, bool per_row);
/// Defined there too: (d wg, d sig_up [G], d sig_low [G]; the two undefined without LWC).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> fused_weight_quantize_backward_cuda(
    const torch::Tensor& wg, const torch::Tensor& grad, const torch::Tensor& stats, int64_t qmin,
    int64_t qmax, bool symmetric, bool lwc, bool per_row);

namespace {

/// The autograd function: inputs (wg, sig_up, sig_low); the sigmoids are [G] or [G, 1] fp32.
/// Without LWC the sigmoid slots hold wg itself, unread and given no gradient (autograd takes
/// no undefined inputs).
struct FusedWeightQuantizeFunction : torch::autograd::Function<FusedWeightQuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& wg,
                               const torch::Tensor& sig_up, const torch::Tensor& sig_low,
                               int64_t qmin, int64_t qmax, bool symmetric, bool lwc,
                               bool per_row) {
    auto [y, stats] = fused_weight_quantize_forward_cuda(
        wg, lwc ? sig_up : torch::Tensor(), lwc ? sig_low : torch::Tensor(), qmin, qmax,
        symmetric, per_row);
    ctx->save_for_backward({wg, stats});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["symmetric"] = symmetric;
    ctx->saved_data["lwc"] = lwc;
    ctx->saved_data["per_row"] = per_row;
    if (lwc) ctx->saved_data["sig_shape"] = sig_up.sizes().vec();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool lwc = ctx->saved_data["lwc"].toBool();
    auto [gx, d_su, d_sl] = fused_weight_quantize_backward_cuda(
        saved[0], grads[0], saved[1], ctx->saved_data["qmin"].toInt(),
        ctx->saved_data["qmax"].toInt(), ctx->saved_data["symmetric"].toBool(), lwc,
        ctx->saved_data["per_row"].toBool());
    if (lwc) {
      const auto shape = ctx->saved_data["sig_shape"].toIntVector();
      d_su = d_su.reshape(shape);
      d_sl = d_sl.reshape(shape);
    }
    return {gx, d_su, d_sl, {}, {}, {}, {}, {}};
  }
};

}  // namespace
#endif

bool fused_weight_quantize_supported(const torch::Tensor& wg) {
#ifdef MQ_HAVE_CUDA_KERNELS
  return wg.defined() && wg.is_cuda() && wg.scalar_type() == torch::kFloat32 && wg.dim() == 2 &&
         wg.is_contiguous();
#else
  (void)wg;
  return false;
#endif
}

torch::Tensor fused_weight_quantize(const torch::Tensor& wg, const torch::Tensor& sig_up,
                                    const torch::Tensor& sig_low, int64_t bits, bool symmetric,
                                    bool per_row) {
  MQ_CHECK(fused_weight_quantize_supported(wg), "fused_weight_quantize: not available for a ",
           wg.defined() ? wg.sizes() : c10::IntArrayRef{}, " tensor in this build (expected a ",
           "contiguous 2-D fp32 CUDA tensor)");
  const bool lwc = sig_up.defined();
  MQ_CHECK(lwc == sig_low.defined(), "fused_weight_quantize: both LWC sigmoids or neither");
  const int64_t groups = per_row ? wg.size(0) : 1;
  if (lwc) {
    for (const torch::Tensor* s : {&sig_up, &sig_low})
      MQ_CHECK(s->numel() == groups && s->scalar_type() == torch::kFloat32 &&
                   s->device() == wg.device(),
               "fused_weight_quantize: an LWC sigmoid of shape ", s->sizes(), " (",
               s->scalar_type(), ", ", s->device(), "), expected ", groups,
               " fp32 values on ", wg.device());
  }
  const auto [qmin, qmax] = code_range(bits, symmetric);
#ifdef MQ_HAVE_CUDA_KERNELS
  const torch::Tensor su = lwc ? sig_up.contiguous() : torch::Tensor();   // [G] or [G, 1]
  const torch::Tensor sl = lwc ? sig_low.contiguous() : torch::Tensor();  // [G] or [G, 1]
  const bool sig_grad = lwc && (su.requires_grad() || sl.requires_grad());
  const bool needs_grad = torch::GradMode::is_enabled() && (wg.requires_grad() || sig_grad);
  if (!needs_grad)
    return fused_weight_quantize_forward_cuda(wg, su, sl, qmin, qmax, symmetric, per_row).first;
  return FusedWeightQuantizeFunction::apply(wg, lwc ? su : wg, lwc ? sl : wg, qmin, qmax,
                                            symmetric, lwc, per_row);
#else
  (void)qmin;
  (void)qmax;
  return wg;
#endif
}

}  // namespace mq
