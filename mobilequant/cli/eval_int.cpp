// mobilequant/cli/eval_int.cpp
// `mobilequant eval --runtime int -m EXPORT`: the integer-only runtime (runtime/) on the
// export's integer model, and on the very same windows the simulated model rebuilt from the
// export's hf/ and reference/ files (the like-for-like simulation: the same integer offsets).
// Per task it prints both perplexities, their relative difference and the greedy agreement:
// the fraction of positions (every position of every window) where the two models' argmax
// tokens are equal. A third pass runs the simulation in fp64, on the export's weight codes
// (derived in fp32, as the export derives them): its agreement with the fp32
// simulation is the noise floor of the comparison (the fp32 simulation's own rounding decides
// codes that lie near a rounding boundary, and later 16-bit sites amplify those flips), the
// best agreement any implementation that is not bit-identical to the fp32 simulation can show.
// The integer runtime computes every site exactly (up to its fixed-point tables), so it is
// compared with the fp64 simulation as well: perplexity difference and greedy agreement.
// With --sites, the first window then goes through the fp64 simulation and the runtime once
// more, site by site (eval/int_site_report.h): a table of the sites whose codes differ, the
// first of them named, and `sites_fp64` in the JSON. With --compare-device cuda, a fourth
// pass runs the fp32 simulation on the GPU (TF32 off) on the same windows: its greedy
// agreement with the CPU's fp32 simulation (and with the runtime) says whether the fp32
// simulation is one model on every device, or only fp64 is a fixed reference.
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "mobilequant/cli/commands.h"
#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"
#include "mobilequant/eval/int_site_report.h"
#include "mobilequant/export/export_reader.h"
#include "mobilequant/runtime/int_model.h"
#include "mobilequant/runtime/int_prefill.h"

namespace mq::cli {

namespace fs = std::filesystem;

void run_eval_int(const EvalConfig& a,
                  const std::vector<std::pair<std::string, std::string>>& inputs) {
  const std::string int_dir = a.model + "/int";
  MQ_CHECK(fs::is_regular_file(int_dir + "/manifest.json"), "eval --runtime int: '", a.model,
           "' is not an export with an integer model (no int/manifest.json); write one with "
           "`mobilequant export RUN --format hf,reference,int`");
  LoadOptions load;  // CPU, fp32
  load.tokenizer_path = a.tokenizer;
  std::cerr << "[eval] loading the simulated model of export " << a.model << "\n";
  LoadedExport ex = load_export(a.model, load);
  MQ_CHECK(ex.base.tokenizer != nullptr, "eval --runtime int: export '", a.model,
           "': no tokenizer (the source model directory is gone); pass --tokenizer");
  ex.model->set_weight_cache(true);
  std::cerr << "[eval] loading the integer model " << int_dir << "\n";
  const rt::IntModel im = rt::IntModel::load(int_dir);
  const int64_t vocab = im.config().vocab_size;
  MQ_CHECK(vocab == ex.base.model->config().vocab_size, "eval --runtime int: ", int_dir,
           " has vocab_size ", vocab, " but hf/config.json has ",
           ex.base.model->config().vocab_size);
  // Runs fn with the simulation in fp64 on the export's weight codes (not ones derived in
  // fp64), then puts it back to fp32.
  auto in_fp64 = [&ex](const std::function<void()>& fn) {
    ex.model->to(torch::kFloat64);
    ex.model->set_export_codes(true);
    fn();
    ex.model->to(torch::kFloat32);
    ex.model->set_export_codes(false);
  };
  // Runs fn with the fp32 simulation on a.compare_device, TF32 off, then puts it back on the
  // CPU (and TF32 as it was).
  auto on_compare_device = [&ex, &a](const std::function<EvalOutcome()>& fn) {
    const torch::Device dev(a.compare_device);
    MQ_CHECK(!dev.is_cuda() || torch::cuda::is_available(), "eval --runtime int: "
             "--compare-device ", a.compare_device, ": CUDA is not available on this machine");
    const bool tf32 = at::globalContext().allowTF32CuBLAS();
    at::globalContext().setAllowTF32CuBLAS(false);
    ex.model->to(dev);
    ex.model->invalidate_weight_cache();
    EvalOutcome out = fn();
    ex.model->to(torch::kCPU);
    ex.model->invalidate_weight_cache();
    at::globalContext().setAllowTF32CuBLAS(tf32);
    return out;
  };
  rt::PrefillOptions popts;
  popts.threads = static_cast<int>(a.threads);
  std::ostringstream device_table;  // compare_device: one row per task
  device_table << "| task | fp32 simulation on | its perplexity (first metric) | greedy "
                  "agreement with the CPU's fp32 simulation | with the integer runtime | "
                  "positions |\n"
               << "|---|---|---:|---:|---:|---:|\n";

  std::ostringstream table;
  table << "| task | metric | simulated | integer | Δ | greedy agreement | simulated fp64 | "
           "fp64 vs fp32 agreement | Δ vs fp64 | agreement with fp64 | positions |\n"
        << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  nlohmann::json results = nlohmann::json::array();
  std::vector<int32_t> first_window;  // --sites: the first window the runtime scored
  for (size_t t = 0; t < a.tasks.size(); ++t) {
    EvalConfig one = a;
    one.tasks = {a.tasks[t]};
    const std::vector<std::pair<std::string, std::string>> in{inputs[t]};
    // Pass 1: the simulation; its argmax per batch, in the scorer's (fixed) order.
    std::vector<torch::Tensor> sim_argmax;  // each [B, L] int64
    auto sim_logits = [&](const torch::Tensor& ids) {
      torch::NoGradGuard no_grad;
      torch::Tensor l = ex.model->forward(ids).to(torch::kFloat32);  // [B, L, V]
      sim_argmax.push_back(l.argmax(-1));
      return l;
    };
    const EvalOutcome sim = evaluate_tasks(ex.base.model, *ex.base.tokenizer, one, in, sim_logits);
    // Pass 2: the integer runtime on the same windows.
    size_t batch_index = 0;
    int64_t agree = 0, positions = 0;
    std::vector<torch::Tensor> int_argmax;  // each [B, L] int64
    auto int_logits = [&](const torch::Tensor& ids) {
      const int64_t b = ids.size(0), len = ids.size(1);
      std::vector<torch::Tensor> rows;
      for (int64_t i = 0; i < b; ++i) {
        const torch::Tensor row = ids[i].to(torch::kInt32).contiguous();  // [L]
        const std::vector<int32_t> tokens(row.data_ptr<int32_t>(), row.data_ptr<int32_t>() + len);
        if (first_window.empty()) first_window = tokens;
        std::vector<float> logits = rt::prefill(im, tokens, popts);  // [L, V]
        rows.push_back(torch::from_blob(logits.data(), {len, vocab}, torch::kFloat32).clone());
      }
      torch::Tensor l = torch::stack(rows);  // [B, L, V]
      MQ_CHECK(batch_index < sim_argmax.size(), "eval --runtime int: more batches than the "
               "simulation scored (a bug)");
      int_argmax.push_back(l.argmax(-1));
      agree += int_argmax.back().eq(sim_argmax[batch_index++]).sum().item<int64_t>();
      positions += b * len;
      return l;
    };
    const EvalOutcome integer =
        evaluate_tasks(ex.base.model, *ex.base.tokenizer, one, in, int_logits);
    const double agreement = positions > 0 ? static_cast<double>(agree) / positions : 0.0;
    // Pass 3: the simulation in fp64 (the noise floor).
    batch_index = 0;
    int64_t agree64 = 0, positions64 = 0, agree_int64 = 0;
    auto sim64_logits = [&](const torch::Tensor& ids) {
      torch::NoGradGuard no_grad;
      torch::Tensor l = ex.model->forward(ids).to(torch::kFloat32);  // [B, L, V]
      const torch::Tensor am = l.argmax(-1);                          // [B, L]
      agree_int64 += am.eq(int_argmax.at(batch_index)).sum().item<int64_t>();
      agree64 += am.eq(sim_argmax.at(batch_index++)).sum().item<int64_t>();
      positions64 += ids.numel();
      return l;
    };
    EvalOutcome sim64;
    in_fp64([&] { sim64 = evaluate_tasks(ex.base.model, *ex.base.tokenizer, one, in, sim64_logits); });
    const double floor64 = positions64 > 0 ? static_cast<double>(agree64) / positions64 : 0.0;
    const double agreement64 =
        positions64 > 0 ? static_cast<double>(agree_int64) / positions64 : 0.0;
    // Pass 4 (compare_device): the same fp32 simulation on another device, TF32 off. Its
    // agreement with the CPU's says whether "the fp32 simulation" is one model at all.
    nlohmann::json on_device = nullptr;
    if (!a.compare_device.empty()) {
      batch_index = 0;
      int64_t agree_dev = 0, agree_dev_int = 0, positions_dev = 0;
      const torch::Device dev(a.compare_device);
      auto dev_logits = [&](const torch::Tensor& ids) {
        torch::NoGradGuard no_grad;
        torch::Tensor l = ex.model->forward(ids.to(dev)).to(torch::kFloat32).cpu();  // [B, L, V]
        const torch::Tensor am = l.argmax(-1);                                      // [B, L]
        agree_dev_int += am.eq(int_argmax.at(batch_index)).sum().item<int64_t>();
        agree_dev += am.eq(sim_argmax.at(batch_index++)).sum().item<int64_t>();
        positions_dev += ids.numel();
        return l;
      };
      const EvalOutcome simdev = on_compare_device(
          [&] { return evaluate_tasks(ex.base.model, *ex.base.tokenizer, one, in, dev_logits); });
      const auto frac = [&](int64_t k) {
        return positions_dev > 0 ? static_cast<double>(k) / positions_dev : 0.0;
      };
      nlohmann::json values = nlohmann::json::array();
      for (const nlohmann::json& m : simdev.results.at(0)["metrics"]) values.push_back(m["value"]);
      on_device = {{"device", dev.str()},
                   {"values", values},
                   {"greedy_agreement_with_cpu_fp32_simulation", frac(agree_dev)},
                   {"greedy_agreement_with_integer", frac(agree_dev_int)}};
      device_table << "| " << to_string(a.tasks[t]) << " | " << dev.str() << " | "
                   << std::fixed << std::setprecision(4) << values.at(0).get<double>() << " | "
                   << std::setprecision(2) << 100.0 * frac(agree_dev) << "% | "
                   << 100.0 * frac(agree_dev_int) << "% | " << positions_dev << " |\n";
    }
    const nlohmann::json& s = sim.results.at(0);
    const nlohmann::json& n = integer.results.at(0);
    nlohmann::json metrics = nlohmann::json::array();
    for (size_t k = 0; k < s["metrics"].size(); ++k) {
      const std::string name = s["metrics"][k]["metric"].get<std::string>();
      const double vs = s["metrics"][k]["value"].get<double>();
      const double vi = n["metrics"][k]["value"].get<double>();
      const double v64 = sim64.results.at(0)["metrics"][k]["value"].get<double>();
      const double rel = (vi - vs) / vs;
      const double rel64 = (vi - v64) / v64;
      table << "| " << to_string(a.tasks[t]) << " | " << name << " | " << std::fixed
            << std::setprecision(4) << vs << " | " << vi << " | " << std::showpos
            << std::setprecision(3) << 100.0 * rel << "%" << std::noshowpos << " | "
            << std::setprecision(2) << 100.0 * agreement << "% | " << std::setprecision(4)
            << v64 << " | " << std::setprecision(2) << 100.0 * floor64 << "% | " << std::showpos
            << std::setprecision(3) << 100.0 * rel64 << "%" << std::noshowpos << " | "
            << std::setprecision(2) << 100.0 * agreement64 << "% | " << positions << " |\n";
      metrics.push_back({{"metric", name},
                         {"simulated", vs},
                         {"integer", vi},
                         {"simulated_fp64", v64},
                         {"relative_difference", rel},
                         {"relative_difference_vs_fp64", rel64}});
    }
    results.push_back({{"task", s["task"]},
                       {"protocol", s["protocol"]},
                       {"data", s["data"]},
                       {"metrics", metrics},
                       {"greedy_agreement", agreement},
                       {"greedy_agreement_fp64_vs_fp32_simulation", floor64},
                       {"greedy_agreement_with_fp64_simulation", agreement64},
                       {"positions", positions},
                       {"scored_tokens", s["scored_tokens"]},
                       {"documents", s["documents"]},
                       {"limited", a.limit >= 0},
                       {"seconds_simulated", s["seconds"]},
                       {"seconds_integer", n["seconds"]}});
    if (!on_device.is_null()) results.back()["simulated_on_compare_device"] = on_device;
  }
  std::cout << table.str() << std::flush;
  if (!a.compare_device.empty()) std::cout << "\n" << device_table.str() << std::flush;
  nlohmann::json sites = nullptr;
  if (a.sites && !first_window.empty()) {
    std::cerr << "[eval] --sites: every activation site of the first window ("
              << first_window.size() << " tokens), integer runtime against the fp64 simulation\n";
    const nlohmann::json activations =
        read_json_file(int_dir + "/manifest.json", "integer model manifest").at("activations");
    std::vector<SiteAgreement> report;
    in_fp64([&] { report = compare_int_sites(*ex.model, im, activations, first_window, popts.threads); });
    std::cout << "\n" << site_report_markdown(report) << std::flush;
    sites = nlohmann::json::array();
    for (const SiteAgreement& r : report) {
      sites.push_back({{"layer", r.layer}, {"site", r.site}, {"compared", r.compared},
                       {"codes", r.codes}, {"equal", r.equal}, {"max_diff", r.max_diff},
                       {"first_token", r.first_token}});
    }
  }
  if (!a.output.empty()) {
    nlohmann::json out{{"model", a.model},
                       {"runtime", "int"},
                       {"preset", ex.manifest.quant.name},
                       {"source", ex.manifest.source},
                       {"threads", a.threads},
                       {"command_line", command_line()},
                       {"machine", machine_info(torch::Device(torch::kCPU))},
                       {"finished_at", utc_now()},
                       {"config", config_to_json(a)},
                       {"results", results}};
    if (!sites.is_null()) out["sites_fp64"] = sites;
    write_json_atomically(out, a.output);
    std::cerr << "[eval] wrote " << a.output << "\n";
  }
}

}  // namespace mq::cli
