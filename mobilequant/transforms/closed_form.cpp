// mobilequant/transforms/closed_form.cpp
#include "mobilequant/transforms/closed_form.h"

#include <filesystem>
#include <functional>
#include <iomanip>
#include <sstream>

#include "mobilequant/core/error.h"
#include "mobilequant/transforms/smoothquant.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

/// FNV-1a 64 of `s` as 16 hex digits (stable across runs and machines, unlike std::hash).
std::string fnv1a_hex(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << h;
  return os.str();
}

}  // namespace

ActStats cached_act_stats(CausalLm& model, const torch::Tensor& windows, int64_t batch_size,
                          const std::string& dir, const std::string& key,
                          const CalibrationProgress& progress,
                          const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  if (dir.empty()) return collect_act_stats(model, windows, batch_size, progress);
  const fs::path file = fs::path(dir) / ("act_stats-" + fnv1a_hex(key) + ".safetensors");
  if (fs::exists(file)) {
    std::map<std::string, std::string> meta;
    ActStats stats = ActStats::load(file.string(), &meta);
    if (meta["key"] == key) {
      say("calibration statistics reused from " + file.string());
      return stats;
    }
    say("calibration cache " + file.string() + " holds other statistics; recomputing");
  }
  ActStats stats = collect_act_stats(model, windows, batch_size, progress);
  fs::create_directories(dir);
  stats.save(file.string(), {{"key", key}});
  say("calibration statistics saved to " + file.string());
  return stats;
}

QuantizedModel quantize_closed_form(CausalLm model, const QuantConfig& quant,
                                    const torch::Tensor& windows, const ClosedFormOptions& opts) {
  auto say = [&](const std::string& line) {
    if (opts.log) opts.log(line);
  };
  const std::string base_key = opts.stats_cache_key + "|fp";
  if (opts.method == QuantMethod::kSmoothQuantStatic ||
      opts.method == QuantMethod::kSmoothQuantEdge) {
    say("calibration pass 1/2: per-channel statistics of the float model");
    ActStats fp = cached_act_stats(model, windows, opts.batch_size, opts.stats_cache_dir,
                                   base_key, opts.progress, opts.log);
    const auto variant = opts.method == QuantMethod::kSmoothQuantEdge ? SmoothQuantVariant::kEdge
                                                                      : SmoothQuantVariant::kStatic;
    apply_smoothquant(model, fp, opts.alpha, variant);
    std::ostringstream tag;
    tag << "|" << to_string(opts.method) << "|alpha=" << opts.alpha;
    say("calibration pass 2/2: ranges of the smoothed model");
    ActStats smoothed = cached_act_stats(model, windows, opts.batch_size, opts.stats_cache_dir,
                                         opts.stats_cache_key + tag.str(), opts.progress, opts.log);
    QuantizedModel qm(model, QuantizedModelOptions(quant).let(opts.let));
    qm->set_act_ranges(smoothed);
    return qm;
  }
  say("calibration: ranges of the float model");
  ActStats fp = cached_act_stats(model, windows, opts.batch_size, opts.stats_cache_dir, base_key,
                                 opts.progress, opts.log);
  QuantizedModel qm(model, QuantizedModelOptions(quant).let(opts.let));
  qm->set_act_ranges(fp);
  return qm;
}

}  // namespace mq
