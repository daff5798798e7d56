// mobilequant/train/e2e_trainer.cpp
#include "mobilequant/train/e2e_trainer.h"

#include <cmath>
#include <vector>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

/// The last decoder layer's output for input_ids [B, T], through the model's hooks.
torch::Tensor last_layer_output(QuantizedModelImpl& qm, const torch::Tensor& ids) {
  CausalLm model = qm.float_model();
  const int64_t last = model->config().num_hidden_layers - 1;
  torch::Tensor out;
  qm.set_observer([&](int64_t layer, ActSite site, const torch::Tensor& x) {
    if (layer == last && site == ActSite::kResidAdd2Out) out = x;
  });
  model->hidden_states(ids);
  qm.set_observer(nullptr);
  MQ_CHECK(out.defined(), "train: the last decoder layer's output was not observed");
  return out;                                                                // [B, T, C]
}

struct Group {
  const char* name;
  ParamGroupOptions opts;
  std::vector<torch::Tensor> params;
  CosineSchedule schedule;
};

}  // namespace

EndToEndResult train_end_to_end(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                const EndToEndOptions& opts) {
  MQ_CHECK(windows.dim() == 2 && windows.scalar_type() == torch::kInt64,
           "train: windows must be [N, T] int64, got ", windows.sizes(), " ",
           windows.scalar_type());
  const int64_t n = windows.size(0);
  MQ_CHECK(opts.batch_size >= 1 && n % opts.batch_size == 0, "train: batch_size ",
           opts.batch_size, " does not divide the ", n, " windows");
  MQ_CHECK(opts.epochs >= 1, "train: epochs: got ", opts.epochs, ", expected >= 1");
  CausalLm model = qm.float_model();
  const auto device = model->parameters().front().device();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  qm.set_weight_cache(false);

  // Targets: the float model (quantization off, transforms as they are) on every window.
  const int64_t batches = n / opts.batch_size;
  std::vector<torch::Tensor> targets;  // per batch: [B, T, C]
  {
    torch::NoGradGuard no_grad;
    qm.set_quantization(false);
    for (int64_t b = 0; b < batches; ++b) {
      auto ids = windows.narrow(0, b * opts.batch_size, opts.batch_size).to(device);
      auto y = last_layer_output(qm, ids);
      targets.push_back(opts.targets_on_device ? y : y.cpu());
    }
    qm.set_quantization(true);
  }

  if (opts.lwc.enabled && qm.lwc_parameters().empty()) qm.enable_lwc();
  qm.set_act_ranges_learnable(opts.lrl.enabled);
  const int64_t total = opts.epochs * batches;
  std::vector<Group> groups = {
      {"let", opts.let, opts.let.enabled ? qm.let_parameters() : std::vector<torch::Tensor>{}, {}},
      {"lwc", opts.lwc, opts.lwc.enabled ? qm.lwc_parameters() : std::vector<torch::Tensor>{}, {}},
      {"lrl", opts.lrl, opts.lrl.enabled ? qm.lrl_parameters() : std::vector<torch::Tensor>{}, {}}};
  for (auto& p : qm.let_parameters()) p.set_requires_grad(opts.let.enabled);
  for (auto& p : qm.lwc_parameters()) p.set_requires_grad(opts.lwc.enabled);
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  std::vector<Group*> live;  // groups with parameters, in optimizer order
  for (auto& g : groups) {
    g.schedule = CosineSchedule{g.opts.lr, g.opts.min_lr, opts.warmup_steps, total};
    if (g.params.empty()) continue;
    param_groups.emplace_back(g.params, std::make_unique<torch::optim::AdamWOptions>(
                                            torch::optim::AdamWOptions(g.opts.lr)
                                                .weight_decay(g.opts.weight_decay)));
    live.push_back(&g);
  }
  MQ_CHECK(!live.empty(), "train: nothing to train (LET, LWC and ARL all off, or the model has "
                          "no scales, weight quantizers or activation ranges)");
  torch::optim::AdamW optimizer(std::move(param_groups));

  EndToEndResult result;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < opts.epochs; ++epoch) {
    double epoch_loss = 0.0;
    for (int64_t b = 0; b < batches; ++b, ++step) {
      TrainStep info;
      info.step = step;
      info.epoch = epoch;
      for (size_t g = 0; g < live.size(); ++g) {
        const double lr = live[g]->schedule.at(step);
        static_cast<torch::optim::AdamWOptions&>(optimizer.param_groups()[g].options()).lr(lr);
        const std::string name = live[g]->name;
        (name == "let" ? info.lr_let : name == "lwc" ? info.lr_lwc : info.lr_lrl) = lr;
      }
      auto ids = windows.narrow(0, b * opts.batch_size, opts.batch_size).to(device);
      optimizer.zero_grad();
      auto out = last_layer_output(qm, ids);                                 // [B, T, C]
      auto loss = torch::mse_loss(out.to(torch::kFloat32),
                                  targets[static_cast<size_t>(b)].to(device, torch::kFloat32));
      info.loss = loss.item<double>();
      MQ_CHECK(std::isfinite(info.loss), "train: non-finite loss ", info.loss, " at step ", step,
               " (epoch ", epoch, ", batch ", b, "); parameters are those after step ", step - 1);
      loss.backward();
      // Squared gradient norm of each group, read back with one device synchronisation.
      std::vector<torch::Tensor> group_sq;
      for (const Group* g : live) {
        auto sq = torch::zeros({}, torch::dtype(torch::kFloat64).device(device));
        for (const auto& p : g->params)
          if (p.grad().defined()) sq = sq + p.grad().to(torch::kFloat64).pow(2).sum();
        group_sq.push_back(sq);
      }
      const auto sq_cpu = torch::stack(group_sq).cpu();                        // [groups]
      double sq = 0.0;
      for (size_t g = 0; g < live.size(); ++g) {
        const double v = sq_cpu[static_cast<int64_t>(g)].item<double>();
        MQ_CHECK(std::isfinite(v), "train: non-finite gradient in parameter group '",
                 live[g]->name, "' at step ", step, " (epoch ", epoch,
                 "); parameters are those after step ", step - 1);
        sq += v;
      }
      info.grad_norm = std::sqrt(sq);
      optimizer.step();
      epoch_loss += info.loss;
      if (opts.on_step) opts.on_step(info);
    }
    epoch_loss /= static_cast<double>(batches);
    if (epoch == 0) result.first_epoch_loss = epoch_loss;
    result.last_epoch_loss = epoch_loss;
  }
  result.steps = step;
  for (auto& p : qm.parameters()) p.set_requires_grad(false);
  return result;
}

}  // namespace mq
