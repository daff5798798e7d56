// mobilequant/train/param_groups.cpp
#include "mobilequant/train/param_groups.h"

#include <cmath>

#include "mobilequant/core/error.h"

namespace mq {

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
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (int g = 0; g < kNumParamGroups; ++g) {
    const bool on = opts[g].enabled && !params[g].empty();
    for (auto& p : params[g]) p.set_requires_grad(on);
    if (!on) continue;
    live_.push_back({static_cast<ParamGroup>(g), params[g],
                     CosineSchedule{opts[g].lr, opts[g].min_lr, warmup_steps, total_steps}});
    groups.emplace_back(params[g], std::make_unique<torch::optim::AdamWOptions>(
                                       torch::optim::AdamWOptions(opts[g].lr)
                                           .weight_decay(opts[g].weight_decay)));
  }
  MQ_CHECK(!live_.empty(), "train: nothing to train (LET, LWC and ARL all off, or the model has "
                           "no scales, weight quantizers or activation ranges)");
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups));
}

void GroupedOptimizer::set_lr(int64_t step, TrainStep& info) {
  info.lr.fill(0.0);
  for (size_t i = 0; i < live_.size(); ++i) {
    const double lr = live_[i].schedule.at(step);
    static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[i].options()).lr(lr);
    info.lr[static_cast<size_t>(live_[i].group)] = lr;
  }
}

void GroupedOptimizer::zero_grad() { optimizer_->zero_grad(); }

double GroupedOptimizer::grad_norm(const std::string& where, int64_t step) {
  std::vector<torch::Tensor> group_sq;
  for (const Live& g : live_) {
    const auto device = g.params.front().device();
    auto sq = torch::zeros({}, torch::dtype(torch::kFloat64).device(device));
    for (const auto& p : g.params)
      if (p.grad().defined()) sq = sq + p.grad().to(torch::kFloat64).pow(2).sum();
    group_sq.push_back(sq);
  }
  const auto sq_cpu = torch::stack(group_sq).cpu();  // [groups], one synchronisation
  const double* v = sq_cpu.data_ptr<double>();
  double total = 0.0;
  for (size_t i = 0; i < live_.size(); ++i) {
    MQ_CHECK(std::isfinite(v[i]), where, ": non-finite gradient in parameter group '",
             to_string(live_[i].group), "' at step ", step);
    total += v[i];
  }
  return std::sqrt(total);
}

void GroupedOptimizer::step() { optimizer_->step(); }

void GroupedOptimizer::save(torch::serialize::OutputArchive& archive) const {
  optimizer_->save(archive);
}

void GroupedOptimizer::load(torch::serialize::InputArchive& archive) { optimizer_->load(archive); }

std::vector<torch::Tensor> GroupedOptimizer::parameters() const {
  std::vector<torch::Tensor> out;
  for (const Live& g : live_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

}  // namespace mq
