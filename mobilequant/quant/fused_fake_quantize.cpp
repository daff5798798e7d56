// mobilequant/quant/fused_fake_quantize.cpp
// The host side: the layout of the scales, the autograd function around the kernels. Without
// MQ_HAVE_CUDA_KERNELS (CPU builds) the fused path is never taken.
#include "mobilequant/quant/fused_fake_quantize.h"

#include <tuple>

#include "mobilequant/core/error.h"

namespace mq {

#ifdef MQ_HAVE_CUDA_KERNELS
/// Defined in fused_fake_quantize_cuda.cu. mode: 0 per tensor, 1 per row, 2 per last-dim channel.
torch::Tensor fused_fake_quantize_cuda(const torch::Tensor& x, const torch::Tensor& scale,
                                       const torch::Tensor& offset, int64_t qmin, int64_t qmax,
                                       int mode);
/// Defined in fused_fake_quantize_cuda.cu: (dx, d scale, d offset), the sums flat ([] per
/// tensor, [rows] or [C]).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> fused_fake_quantize_backward_cuda(
    const torch::Tensor& x, const torch::Tensor& grad_y, const torch::Tensor& scale,
    const torch::Tensor& offset, int64_t qmin, int64_t qmax, int mode);
#endif

namespace {

/// 0 per tensor, 1 per row of a 2-D x, 2 per channel of the last dimension, -1 otherwise.
int layout_mode(const torch::Tensor& x, const torch::Tensor& scale) {
  if (scale.numel() == 1) return 0;
  if (x.dim() == 2 && scale.dim() == 2 && scale.size(0) == x.size(0) && scale.size(1) == 1)
    return 1;
  if (x.dim() >= 1 && scale.dim() == 1 && scale.numel() == x.size(-1)) return 2;
  return -1;
}

/// Throws unless the fused kernels can take (x, scale, offset).
int checked_mode(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& offset,
                 const char* where) {
  MQ_CHECK(fused_fake_quantize_supported(x), where, ": not available for a ", x.scalar_type(),
           " tensor on ", x.device(), " in this build");
  MQ_CHECK(scale.sizes() == offset.sizes(), where, ": scale has shape ", scale.sizes(),
           ", offset ", offset.sizes(), " (expected equal shapes)");
  const int mode = layout_mode(x, scale);
  MQ_CHECK(mode >= 0, where, ": scale of shape ", scale.sizes(), " for an input of shape ",
           x.sizes(), " (expected one element, [last dim], or [rows, 1] for a 2-D input)");
  return mode;
}

#ifdef MQ_HAVE_CUDA_KERNELS
/// The autograd function: forward and backward one kernel each (plus one reduction).
struct FusedFakeQuantizeFunction : torch::autograd::Function<FusedFakeQuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& scale, const torch::Tensor& offset,
                               int64_t qmin, int64_t qmax, int64_t mode) {
    ctx->save_for_backward({x, scale, offset});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["mode"] = mode;
    return fused_fake_quantize_cuda(x, scale, offset, qmin, qmax, static_cast<int>(mode));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];       // [x]
    const torch::Tensor& scale = saved[1];   // [] / [1] / [rows, 1] / [C]
    const torch::Tensor& offset = saved[2];  // same shape
    auto [gx, gs, go] = fused_fake_quantize_backward_cuda(
        x, grads[0], scale, offset, ctx->saved_data["qmin"].toInt(),
        ctx->saved_data["qmax"].toInt(), static_cast<int>(ctx->saved_data["mode"].toInt()));
    return {gx, gs.reshape(scale.sizes()).to(scale.scalar_type()),
            go.reshape(offset.sizes()).to(offset.scalar_type()), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};
#endif

}  // namespace

bool fused_fake_quantize_supported(const torch::Tensor& x) {
#ifdef MQ_HAVE_CUDA_KERNELS
  const auto t = x.scalar_type();
  return x.is_cuda() &&
         (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16);
#else
  (void)x;
  return false;
#endif
}

bool fused_fake_quantize_layout_supported(const torch::Tensor& x, const torch::Tensor& scale) {
  return layout_mode(x, scale) >= 0;
}

torch::Tensor fused_fake_quantize(const torch::Tensor& x, const torch::Tensor& scale,
                                  const torch::Tensor& offset, int64_t qmin, int64_t qmax) {
  const int mode = checked_mode(x, scale, offset, "fused_fake_quantize");
#ifdef MQ_HAVE_CUDA_KERNELS
  return fused_fake_quantize_cuda(x, scale, offset, qmin, qmax, mode);
#else
  (void)mode;
  (void)qmin;
  (void)qmax;
  return x;
#endif
}

torch::Tensor fused_fake_quantize_learnable(const torch::Tensor& x, const torch::Tensor& scale,
                                            const torch::Tensor& offset, int64_t qmin,
                                            int64_t qmax) {
  const int mode = checked_mode(x, scale, offset, "fused_fake_quantize_learnable");
#ifdef MQ_HAVE_CUDA_KERNELS
  return FusedFakeQuantizeFunction::apply(x, scale, offset, qmin, qmax,
                                          static_cast<int64_t>(mode));
#else
  (void)mode;
  (void)qmin;
  (void)qmax;
  return x;
#endif
}

}  // namespace mq
