// mobilequant/config/train_config.cpp
#include "mobilequant/config/train_config.h"

#include "mobilequant/core/error.h"

namespace mq {

const char* to_string(TrainerKind k) {
  switch (k) {
    case TrainerKind::kNone: return "none";
    case TrainerKind::kEndToEnd: return "end-to-end";
    case TrainerKind::kBlockwise: return "block-wise";
  }
  throw make_error("TrainerKind: invalid value ", static_cast<int>(k));
}

const std::vector<TrainerKind>& EnumValues<TrainerKind>::values() {
  static const std::vector<TrainerKind> all = {TrainerKind::kNone, TrainerKind::kEndToEnd,
                                               TrainerKind::kBlockwise};
  return all;
}

const char* to_string(TrainLoss l) {
  switch (l) {
    case TrainLoss::kMse: return "mse";
    case TrainLoss::kKl: return "kl";
    case TrainLoss::kLm: return "lm";
  }
  throw make_error("TrainLoss: invalid value ", static_cast<int>(l));
}

const std::vector<TrainLoss>& EnumValues<TrainLoss>::values() {
  static const std::vector<TrainLoss> all = {TrainLoss::kMse, TrainLoss::kKl, TrainLoss::kLm};
  return all;
}

const char* to_string(TrainPrecision p) {
  switch (p) {
    case TrainPrecision::kFp32: return "fp32";
    case TrainPrecision::kBf16: return "bf16";
  }
  throw make_error("TrainPrecision: invalid value ", static_cast<int>(p));
}

const std::vector<TrainPrecision>& EnumValues<TrainPrecision>::values() {
  static const std::vector<TrainPrecision> all = {TrainPrecision::kFp32, TrainPrecision::kBf16};
  return all;
}

void TrainConfig::validate(const std::string& where) const {
  MQ_CHECK(epochs >= 1, where, ": train.epochs: got ", epochs, ", expected >= 1");
  MQ_CHECK(batch_size >= 1, where, ": train.batch_size: got ", batch_size, ", expected >= 1");
  MQ_CHECK(grad_accum >= 1, where, ": train.grad_accum: got ", grad_accum, ", expected >= 1");
  MQ_CHECK(warmup_steps >= 0, where, ": train.warmup_steps: got ", warmup_steps,
           ", expected >= 0");
  MQ_CHECK(checkpoint_every >= 0, where, ": train.checkpoint_every: got ", checkpoint_every,
           ", expected >= 0 (0: at the end of each epoch)");
  const std::pair<const char*, const ParamGroupOptions*> groups[] = {
      {"let", &let}, {"lwc", &lwc}, {"lrl", &lrl}};
  for (const auto& [name, g] : groups) {
    MQ_CHECK(g->lr >= 0.0 && g->min_lr >= 0.0 && g->weight_decay >= 0.0, where, ": train.",
             name, ": learning rates and weight decay must be >= 0, got lr ", g->lr, ", min_lr ",
             g->min_lr, ", weight_decay ", g->weight_decay);
  }
  if (trainer != TrainerKind::kNone) {
    MQ_CHECK((let.enabled && let_pairs.any()) || lwc.enabled || lrl.enabled, where, ": trainer ",
             to_string(trainer), " with nothing to train: enable train.let (with a let_pairs "
             "entry), train.lwc or train.lrl");
  }
  MQ_CHECK(!recompute || loss == TrainLoss::kMse, where,
           ": train.recompute needs train.loss mse (got '", to_string(loss), "')");
  MQ_CHECK(!cuda_graph || loss == TrainLoss::kMse, where,
           ": train.cuda_graph needs train.loss mse (got '", to_string(loss), "')");
  MQ_CHECK(trainer != TrainerKind::kBlockwise || loss == TrainLoss::kMse, where,
           ": train.loss: block-wise training minimises each block's MSE; got '", to_string(loss),
           "' (kl and lm need trainer end-to-end)");
}

}  // namespace mq
