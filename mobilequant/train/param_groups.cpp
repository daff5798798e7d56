// mobilequant/train/param_groups.cpp
#include "mobilequant/train/param_groups.h"

#include <cmath>
#include <sstream>

#include "mobilequant/core/error.h"

namespace mq {

namespace {
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;  // torch.optim.AdamW defaults
}  // namespace

const char* to_string(ParamGroup g) {
  switch (g) {
    case ParamGroup::kLet: return "let";
    case ParamGroup::kLwc: return "lwc";
    case ParamGroup::kLrl: return "lrl";
  }
  throw make_error("ParamGroup: invalid value ", static_cast<int>(g));
}

GroupedOptimizer::GroupedOptimizer(std::array<std::vector<torch::Tensor>, kNumParamGroups> params,
                                   const std::array<ParamGroupOptions, kNumParamGroups>& opts,
                                   int64_t warmup_steps, int64_t total_steps) {
  for (int g = 0; g < kNumParamGroups; ++g) {
    const bool on = opts[g].enabled && !params[g].empty();
    for (auto& p : params[g]) p.set_requires_grad(on);
    if (!on) continue;
    Live live;
    live.group = static_cast<ParamGroup>(g);
    live.params = params[g];
    live.schedule = CosineSchedule{opts[g].lr, opts[g].min_lr, warmup_steps, total_steps};
    live.weight_decay = opts[g].weight_decay;
    live.lr = opts[g].lr;
    for (const auto& p : params[g]) {
      MQ_CHECK(p.scalar_type() == torch::kFloat32 && p.device() == params[g].front().device(),
               "train: every ", to_string(live.group), " parameter must be fp32 on one device, got ",
               p.scalar_type(), " on ", p.device());
      live.exp_avg.push_back(torch::zeros_like(p));                          // [p]
      live.exp_avg_sq.push_back(torch::zeros_like(p));                       // [p]
      live.steps.push_back(torch::zeros({}, p.options()));                   // []
    }
    live_.push_back(std::move(live));
  }
  MQ_CHECK(!live_.empty(), "train: nothing to train (LET, LWC and ARL all off, or the model has "
                           "no scales, weight quantizers or activation ranges)");
}

void GroupedOptimizer::set_lr(int64_t step, TrainStep& info) {
  info.lr.fill(0.0);
  for (auto& g : live_) {
    g.lr = g.schedule.at(step);
    info.lr[static_cast<size_t>(g.group)] = g.lr;
  }
}

void GroupedOptimizer::zero_grad() {
  for (auto& g : live_)
    for (auto& p : g.params) p.mutable_grad().reset();
}

void GroupedOptimizer::zero_grad_in_place() {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (auto& g : live_)
    for (auto& p : g.params)
      if (p.grad().defined()) grads.push_back(p.grad());
  if (!grads.empty()) at::_foreach_zero_(grads);
}

void GroupedOptimizer::throw_non_finite(const Live& g, const std::string& where,
                                        int64_t step) const {
  // The cold path: say which tensors' gradients are not finite. The first names where it shows;
  // the last in model order bounds where it came from (backward runs from the loss back).
  std::ostringstream first;
  std::string last;
  int64_t bad = 0;
  for (size_t i = 0; i < g.params.size(); ++i) {
    const torch::Tensor& p = g.params[i];
    if (!p.grad().defined()) continue;
    const torch::Tensor grad = p.grad().detach().cpu();  // [p's shape]
    const int64_t nan = grad.isnan().sum().item<int64_t>();
    const int64_t inf = grad.isinf().sum().item<int64_t>();
    if (nan == 0 && inf == 0) continue;
    const std::string name = namer_ ? namer_(p) : std::string();
    last = name.empty() ? "tensor #" + std::to_string(i) : name;
    if (bad++ > 0) continue;
    first << ": " << last << " " << p.sizes() << " has " << nan << " NaN and " << inf
          << " infinite of " << grad.numel() << " gradient elements (the tensor's own values are "
          << (torch::isfinite(p.detach()).all().item<bool>() ? "finite" : "NOT finite") << ")";
  }
  if (bad > 1) {
    first << "; " << bad << " of the group's " << g.params.size()
          << " tensors have non-finite gradients, the last of them " << last;
  }
  throw Error(where + ": non-finite gradient in parameter group '" + to_string(g.group) +
              "' at step " + std::to_string(step) + first.str());
}

double GroupedOptimizer::grad_norm(const std::string& where, int64_t step) {
  std::vector<torch::Tensor> group_sq;
  for (const Live& g : live_) {
    std::vector<torch::Tensor> grads;
    for (const auto& p : g.params)
      if (p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) {
      group_sq.push_back(torch::zeros({}, torch::dtype(torch::kFloat64).device(g.params.front().device())));
      continue;
    }
    const auto norms = torch::stack(at::_foreach_norm(grads, 2));             // [params]
    group_sq.push_back(norms.to(torch::kFloat64).pow(2).sum());
  }
  const auto sq_cpu = torch::stack(group_sq).cpu();  // [groups], one synchronisation
  const double* v = sq_cpu.data_ptr<double>();
  double total = 0.0;
  for (size_t i = 0; i < live_.size(); ++i) {
    if (!std::isfinite(v[i])) throw_non_finite(live_[i], where, step);
    total += v[i];
  }
  return std::sqrt(total);
}

void GroupedOptimizer::step() {
  torch::NoGradGuard no_grad;
  for (auto& g : live_) {
    // Parameters without a gradient are skipped, as torch.optim does (their state stays).
    std::vector<torch::Tensor> params, grads, m, v, steps;
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (!g.params[i].grad().defined()) continue;
      params.push_back(g.params[i]);
      grads.push_back(g.params[i].grad());
      m.push_back(g.exp_avg[i]);
      v.push_back(g.exp_avg_sq[i]);
      steps.push_back(g.steps[i]);
    }
    if (params.empty()) continue;
    at::_foreach_add_(steps, 1);  // the kernel reads the step count, torch.optim increments it
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, g.lr, kBeta1, kBeta2,
                      g.weight_decay, kEps, /*amsgrad=*/false, /*maximize=*/false);
  }
}

TensorMap GroupedOptimizer::state() const {
  TensorMap out;
  for (const Live& g : live_) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      const std::string prefix =
          std::string("optimizer.") + to_string(g.group) + "." + std::to_string(i) + ".";
      out[prefix + "exp_avg"] = g.exp_avg[i];
      out[prefix + "exp_avg_sq"] = g.exp_avg_sq[i];
      out[prefix + "step"] = g.steps[i];
    }
  }
  return out;
}

void GroupedOptimizer::load_state(const TensorMap& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (Live& g : live_) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      const std::string prefix =
          std::string("optimizer.") + to_string(g.group) + "." + std::to_string(i) + ".";
      const std::pair<const char*, torch::Tensor*> entries[] = {
          {"exp_avg", &g.exp_avg[i]}, {"exp_avg_sq", &g.exp_avg_sq[i]}, {"step", &g.steps[i]}};
      for (const auto& [name, dst] : entries) {
        const auto it = tensors.find(prefix + name);
        MQ_CHECK(it != tensors.end(), source, ": optimizer state '", prefix + name,
                 "' missing (a checkpoint of another configuration?)");
        MQ_CHECK(it->second.sizes() == dst->sizes(), source, ": optimizer state '", prefix + name,
                 "' has shape ", it->second.sizes(), ", expected ", dst->sizes());
        dst->copy_(it->second);
      }
    }
  }
}

std::vector<torch::Tensor> GroupedOptimizer::parameters() const {
  std::vector<torch::Tensor> out;
  for (const Live& g : live_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

}  // namespace mq
