// mobilequant/calib/act_stats.cpp
// Running per-channel / per-tensor min and max of every activation site (reference
// `generate_act_scales.py` / `generate_act_range.py`, §1.5 and §3.3: pure min/max), collected
// through the decoder's hooks, and their safetensors file.
#include "mobilequant/calib/act_stats.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"

namespace mq {
namespace {

/// Hooks that fold every activation into an ActStats and leave it unchanged.
class StatsHooks : public ForwardHooks {
 public:
  explicit StatsHooks(ActStats& stats) : stats_(stats) {}
  torch::Tensor activation(int64_t layer, ActSite site, const torch::Tensor& x) override {
    stats_.observe(layer, site, x);
    return x;
  }

 private:
  ActStats& stats_;
};

/// Puts back the hooks a model had when the guard was made, however the scope is left.
class HooksRestorer {
 public:
  explicit HooksRestorer(CausalLm& model) : model_(model), saved_(model->hooks()) {}
  ~HooksRestorer() { model_->set_hooks(saved_); }
  HooksRestorer(const HooksRestorer&) = delete;
  HooksRestorer& operator=(const HooksRestorer&) = delete;

 private:
  CausalLm& model_;
  ForwardHooks* saved_;
};

/// Throws unless every value of `t` ([C] fp32, CPU) is finite, naming the site and the value.
void check_finite(const torch::Tensor& t, int64_t layer, ActSite site, const char* what) {
  const auto bad = torch::logical_not(torch::isfinite(t)).nonzero();  // [K, 1]
  if (bad.size(0) == 0) return;
  const int64_t idx = bad[0][0].item<int64_t>();
  throw make_error("activation stats of '", qualified_site_name(layer, site), "': ", what,
                   " is ", t[idx].item<float>(), " at index ", idx, " of ", t.size(0), " (",
                   bad.size(0), " non-finite values), expected finite values");
}

/// "model.layers.3.mlp.w2.output" -> (3, kDownOut); model-level names -> (-1, site). Returns
/// false when `name` is no qualified site name.
bool parse_qualified_site(const std::string& name, int64_t* layer, ActSite* site) {
  static const std::string kPrefix = "model.layers.";
  std::string rest = name;
  int64_t l = -1;
  if (name.compare(0, kPrefix.size(), kPrefix) == 0) {
    size_t pos = kPrefix.size();
    const size_t digits_begin = pos;
    while (pos < name.size() && std::isdigit(static_cast<unsigned char>(name[pos]))) ++pos;
    if (pos == digits_begin || pos - digits_begin > 9 || pos >= name.size() || name[pos] != '.') {
      return false;
    }
    l = std::stoll(name.substr(digits_begin, pos - digits_begin));
    rest = name.substr(pos + 1);
  }
  for (const ActSite s : EnumValues<ActSite>::values()) {
    if (rest == to_string(s) && is_block_site(s) == (l >= 0) &&
        qualified_site_name(l, s) == name) {
      *layer = l;
      *site = s;
      return true;
    }
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------- SiteStats

torch::Tensor SiteStats::absmax() const { return torch::maximum(min.abs(), max.abs()); }

torch::Tensor SiteStats::tensor_min() const { return min.min(); }

torch::Tensor SiteStats::tensor_max() const { return max.max(); }

// ---------------------------------------------------------------------------- ActStats

void ActStats::observe(int64_t layer, ActSite site, const torch::Tensor& x) {
  MQ_CHECK(x.defined() && x.dim() >= 1 && x.numel() > 0, "activation stats of '",
           qualified_site_name(layer, site), "': got an empty or undefined tensor ",
           (x.defined() ? x.sizes() : torch::IntArrayRef{}), ", expected at least one value");
  torch::NoGradGuard no_grad;
  const auto xf = x.detach().to(torch::kFloat32);  // [..., C] fp32 on x's device
  torch::Tensor mn;                                // [C] or [1]
  torch::Tensor mx;                                // same shape
  if (has_channel_dim(site)) {
    const auto flat = xf.reshape({-1, xf.size(-1)});  // [rows, C]
    mn = flat.amin(0);
    mx = flat.amax(0);
  } else {
    mn = xf.amin().reshape({1});
    mx = xf.amax().reshape({1});
  }
  auto it = stats_.find({layer, site});
  if (it == stats_.end()) {
    stats_.emplace(std::make_pair(layer, site), SiteStats{mn, mx, 1});
    return;
  }
  SiteStats& s = it->second;
  MQ_CHECK(s.min.sizes() == mn.sizes(), "activation stats of '", qualified_site_name(layer, site),
           "': got ", mn.size(0), " channels (tensor ", x.sizes(), "), expected ", s.min.size(0),
           " as in earlier batches");
  // minimum/maximum propagate NaN, so a NaN anywhere reaches finish().
  s.min = torch::minimum(s.min, mn.to(s.min.device()));
  s.max = torch::maximum(s.max, mx.to(s.max.device()));
  ++s.batches;
}

void ActStats::finish() {
  for (auto& [key, s] : stats_) {
    s.min = s.min.to(torch::kCPU, torch::kFloat32).contiguous();  // [C] or [1]
    s.max = s.max.to(torch::kCPU, torch::kFloat32).contiguous();  // [C] or [1]
    check_finite(s.min, key.first, key.second, "min");
    check_finite(s.max, key.first, key.second, "max");
  }
}

bool ActStats::contains(int64_t layer, ActSite site) const {
  return stats_.count({layer, site}) > 0;
}

const SiteStats& ActStats::at(int64_t layer, ActSite site) const {
  auto it = stats_.find({layer, site});
  MQ_CHECK(it != stats_.end(), "activation stats: site '", qualified_site_name(layer, site),
           "' was never observed (", stats_.size(), " sites were)");
  return it->second;
}

void ActStats::save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const {
  TensorMap tensors;
  for (const auto& [key, s] : stats_) {
    const std::string name = qualified_site_name(key.first, key.second);
    tensors[name + ".min"] = s.min.to(torch::kCPU, torch::kFloat32);  // [C] or [1]
    tensors[name + ".max"] = s.max.to(torch::kCPU, torch::kFloat32);  // [C] or [1]
    tensors[name + ".batches"] = torch::tensor({s.batches}, torch::kInt64);  // [1]
  }
  write_safetensors(path, tensors, metadata);
}

ActStats ActStats::load(const std::string& path, std::map<std::string, std::string>* metadata) {
  const TensorMap tensors = read_safetensors(path);  // floats as fp32, batches as int64
  ActStats out;
  // Which of min/max/batches each site had, to report a missing one.
  std::map<std::pair<int64_t, ActSite>, int> seen;
  for (const auto& [name, t] : tensors) {
    const size_t dot = name.rfind('.');
    const std::string field = dot == std::string::npos ? "" : name.substr(dot + 1);
    int64_t layer = -1;
    ActSite site = ActSite::kCount;
    MQ_CHECK((field == "min" || field == "max" || field == "batches") &&
                 parse_qualified_site(name.substr(0, dot), &layer, &site),
             "activation stats '", path, "': unknown tensor '", name,
             "', expected '<site>.min', '<site>.max' or '<site>.batches' with a qualified site "
             "name such as 'model.layers.0.mlp.w2.input'");
    SiteStats& s = out.stats_[{layer, site}];
    if (field == "batches") {
      MQ_CHECK(t.dim() == 1 && t.size(0) == 1 && t.scalar_type() == torch::kInt64,
               "activation stats '", path, "': tensor '", name, "' is ", t.scalar_type(), " ",
               t.sizes(), ", expected int64 [1]");
      s.batches = t[0].item<int64_t>();
      seen[{layer, site}] |= 4;
      continue;
    }
    const int64_t channels = t.dim() == 1 ? t.size(0) : -1;
    MQ_CHECK(channels >= 1 && (has_channel_dim(site) || channels == 1), "activation stats '",
             path, "': tensor '", name, "' has shape ", t.sizes(), ", expected ",
             has_channel_dim(site) ? "[C]" : "[1]");
    (field == "min" ? s.min : s.max) = t.to(torch::kFloat32).contiguous();
    seen[{layer, site}] |= field == "min" ? 1 : 2;
  }
  for (const auto& [key, mask] : seen) {
    const std::string name = qualified_site_name(key.first, key.second);
    MQ_CHECK(mask == 7, "activation stats '", path, "': site '", name, "' lacks tensor '", name,
             (mask & 1) == 0 ? ".min" : (mask & 2) == 0 ? ".max" : ".batches",
             "', expected .min, .max and .batches for every site");
    const SiteStats& s = out.stats_.at(key);
    MQ_CHECK(s.min.sizes() == s.max.sizes(), "activation stats '", path, "': '", name,
             ".min' has shape ", s.min.sizes(), " but '", name, ".max' has ", s.max.sizes(),
             ", expected equal shapes");
    check_finite(s.min, key.first, key.second, "min");
    check_finite(s.max, key.first, key.second, "max");
  }
  if (metadata != nullptr) *metadata = read_safetensors_header(path).metadata;
  return out;
}

// ---------------------------------------------------------------------------- collection

ActStats collect_act_stats(CausalLm& model, const torch::Tensor& windows, int64_t batch_size,
                           const CalibrationProgress& progress) {
  MQ_CHECK(windows.defined() && windows.dim() == 2 && windows.scalar_type() == torch::kInt64 &&
               windows.size(0) >= 1 && windows.size(1) >= 1,
           "collect_act_stats: windows must be int64 [N, T] with N, T >= 1, got ",
           (windows.defined() ? windows.sizes() : torch::IntArrayRef{}));
  MQ_CHECK(batch_size >= 1, "collect_act_stats: batch_size=", batch_size, ", expected >= 1");
  const auto params = model->parameters();
  MQ_CHECK(!params.empty(), "collect_act_stats: the model has no parameters");
  const torch::Device device = params.front().device();

  torch::NoGradGuard no_grad;
  ActStats stats;
  StatsHooks hooks(stats);
  HooksRestorer restore(model);  // also on an exception from the forward or a hook
  model->set_hooks(&hooks);
  const int64_t n = windows.size(0);
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    model->forward(windows.slice(0, begin, end).to(device));  // [b, T] -> logits [b, T, V]
    if (progress) progress(end, n);
  }
  stats.finish();
  return stats;
}

}  // namespace mq
