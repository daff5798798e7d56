// mobilequant/train/recompute.cpp
#include "mobilequant/train/recompute.h"

#include "mobilequant/core/error.h"
#include "mobilequant/train/autocast_guard.h"

namespace mq {

namespace {

/// The checkpointed segment as an autograd node. The function is passed by address (it lives
/// in the trainer's step, which outlasts the backward pass).
struct Recompute : public torch::autograd::Function<Recompute> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor h,
                               int64_t fn_address, int64_t layer, bool bf16) {
    ctx->saved_data["fn"] = fn_address;
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["bf16"] = bf16;
    ctx->save_for_backward({h});
    const auto& fn = *reinterpret_cast<const LayerFunction*>(fn_address);
    torch::NoGradGuard no_grad;
    return fn(layer, h);                                                     // [B, T, C]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto& fn = *reinterpret_cast<const LayerFunction*>(ctx->saved_data["fn"].toInt());
    const int64_t layer = ctx->saved_data["layer"].toInt();
    auto h = ctx->get_saved_variables()[0].detach().requires_grad_(true);   // [B, T, C]
    torch::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      AutocastGuard autocast(h.device(), ctx->saved_data["bf16"].toBool());
      out = fn(layer, h);                                                    // [B, T, C]
    }
    torch::autograd::backward({out}, {grad_out[0]});
    return {h.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor recompute_in_backward(const LayerFunction& fn, int64_t layer, const torch::Tensor& h,
                                    bool bf16) {
  MQ_CHECK(fn != nullptr, "recompute_in_backward: empty function");
  // The node is only recorded if an input requires a gradient; the first block's input (frozen
  // embeddings) does not, yet the block's own parameters need theirs.
  const torch::Tensor x = h.requires_grad() ? h : h.detach().requires_grad_(true);
  return Recompute::apply(x, static_cast<int64_t>(reinterpret_cast<intptr_t>(&fn)), layer, bf16);
}

}  // namespace mq
