// mobilequant/cli/bench_int.cpp
// `mobilequant bench int -m EXPORT`: prefill latency of the integer-only runtime (runtime/)
// against the float LibTorch forward of the same exported model (hf/, fp32) on the CPU, in
// one run with the same thread count, at several sequence lengths: medians and their ratio
// (the paper's Table 6 reports on-device prefill gains; here the goal is W8A8 faster than
// fp32 on a CPU).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "mobilequant/cli/commands.h"
#include "mobilequant/core/error.h"
#include "mobilequant/runtime/int_model.h"
#include "mobilequant/runtime/int_prefill.h"
#include "mobilequant/runtime/vnni_gemm.h"

namespace mq::cli {

namespace fs = std::filesystem;

namespace {

struct BenchIntArgs {
  std::string model;
  std::vector<int64_t> seqlens{128, 256, 512};
  int64_t warmup = 1, reps = 5, threads = 0, seed = 0;
  bool profile = false;
  std::string gemm = "auto";
  std::string output;
};

/// FNV-1a (64-bit) of the logits' bytes: equal digests mean bitwise equal logits, so two
/// builds, backends or machines can be compared for exactness from their bench output.
uint64_t logits_digest(const std::vector<float>& logits) {
  uint64_t h = 1469598103934665603ull;
  const auto* bytes = reinterpret_cast<const unsigned char*>(logits.data());
  for (size_t i = 0; i < logits.size() * sizeof(float); ++i) {
    h ^= bytes[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << v;
  return os.str();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <class F>
double median_seconds(int64_t warmup, int64_t reps, F&& f) {
  for (int64_t i = 0; i < warmup; ++i) f();
  std::vector<double> s;
  for (int64_t i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(s);
}

void run_bench_int(const BenchIntArgs& a) {
  MQ_CHECK(fs::is_regular_file(a.model + "/int/manifest.json"), "bench int: '", a.model,
           "' is not an export with an integer model (no int/manifest.json); write one with "
           "`mobilequant export RUN --format hf,int`");
  MQ_CHECK(fs::is_regular_file(a.model + "/hf/config.json"), "bench int: '", a.model,
           "' has no hf/ float model to compare with; export with --format hf,int");
  MQ_CHECK(a.reps >= 1 && a.warmup >= 0, "bench int: --reps must be >= 1 and --warmup >= 0");
  if (a.gemm == "gemmlowp") rt::set_gemm_backend(rt::GemmBackend::kGemmlowp);
  if (a.gemm == "vnni") rt::set_gemm_backend(rt::GemmBackend::kVnni);
  if (a.threads > 0) torch::set_num_threads(static_cast<int>(a.threads));
  const int threads = torch::get_num_threads();
  std::cerr << "[bench int] loading " << a.model << "/int and " << a.model << "/hf\n";
  const rt::IntModel im = rt::IntModel::load(a.model + "/int");
  LoadedModel lm = load_model(a.model + "/hf", LoadOptions{});
  const int64_t vocab = im.config().vocab_size;
  rt::PrefillOptions popts;
  popts.threads = threads;
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab - 1));

  std::cout << "\n| seqlen | fp32 LibTorch ms | integer runtime ms | speed-up (fp32 / int) | "
               "int logits (FNV-1a) |\n"
            << "|---:|---:|---:|---:|---|\n";
  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::pair<int64_t, rt::PrefillProfile>> profiles;  // (seqlen, stage times)
  for (const int64_t t : a.seqlens) {
    MQ_CHECK(t >= 1 && t <= im.config().max_positions, "bench int: seqlen ", t,
             " outside [1, ", im.config().max_positions, "]");
    // The tokens depend on the seed and the length only, so that runs with other --seqlens
    // lists prefill (and digest) the same inputs at a length.
    std::seed_seq seq{static_cast<uint32_t>(a.seed), static_cast<uint32_t>(t)};
    std::mt19937 rng(seq);
    std::vector<int32_t> tokens(static_cast<size_t>(t));
    for (auto& x : tokens) x = tok(rng);
    const torch::Tensor ids =
        torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end())).unsqueeze(0);  // [1, T]
    std::cerr << "[bench int] seqlen " << t << "\n";
    const double f = median_seconds(a.warmup, a.reps, [&] {
      torch::NoGradGuard no_grad;
      (void)lm.model->forward(ids);
    });
    std::vector<float> logits;  // [T, V] the last timed prefill's
    const double i =
        median_seconds(a.warmup, a.reps, [&] { logits = rt::prefill(im, tokens, popts); });
    const std::string digest = hex64(logits_digest(logits));
    std::cout << "| " << t << " | " << std::fixed << std::setprecision(1) << 1e3 * f << " | "
              << 1e3 * i << " | " << std::setprecision(2) << f / i << " | " << digest << " |\n";
    nlohmann::json row{{"seqlen", t},
                       {"fp32_median_seconds", f},
                       {"int_median_seconds", i},
                       {"speedup", f / i},
                       {"int_logits_fnv1a", digest}};
    if (a.profile) {
      // One more run per timed one, profiled apart so that the timers never touch the medians.
      rt::PrefillProfile prof;
      rt::PrefillOptions po = popts;
      po.profile = &prof;
      for (int64_t r = 0; r < a.reps; ++r) (void)rt::prefill(im, tokens, po);
      nlohmann::json stages = nlohmann::json::object();
      for (const auto& [stage, sec] : prof.seconds) stages[stage] = sec / static_cast<double>(prof.calls);
      row["int_stage_mean_seconds"] = stages;
      profiles.emplace_back(t, std::move(prof));
    }
    rows.push_back(row);
  }
  for (const auto& [t, prof] : profiles) {
    double total = 0;
    for (const auto& kv : prof.seconds) total += kv.second;
    std::cout << "\nInteger runtime stages at seqlen " << t << " (mean of " << prof.calls
              << " profiled prefills):\n\n| stage | ms | share |\n|---|---:|---:|\n";
    for (const auto& [stage, sec] : prof.seconds) {
      std::cout << "| " << stage << " | " << std::fixed << std::setprecision(2)
                << 1e3 * sec / static_cast<double>(prof.calls) << " | " << std::setprecision(1)
                << 100.0 * sec / total << "% |\n";
    }
  }
  std::cout << "\nexport " << a.model << ", CPU, " << threads << " threads (both), median of "
            << a.reps << " after " << a.warmup << " warm-up(s); integer GEMM "
            << rt::gemm_backend_name() << "; LibTorch " << TORCH_VERSION << "\n";
  if (!a.output.empty()) {
    nlohmann::json j{{"model", a.model},
                     {"threads", threads},
                     {"gemm", rt::gemm_backend_name()},
                     {"reps", a.reps},
                     {"warmup", a.warmup},
                     {"libtorch", TORCH_VERSION},
                     {"command_line", command_line()},
                     {"machine", machine_info(torch::Device(torch::kCPU))},
                     {"results", rows}};
    write_json_atomically(j, a.output);
  }
}

}  // namespace

void add_bench_int_subcommand(CLI::App& bench) {
  auto a = std::make_shared<BenchIntArgs>();
  auto* cmd = bench.add_subcommand(
      "int", "Integer-runtime prefill latency against the fp32 LibTorch forward, on the CPU");
  cmd->add_option("-m,--model", a->model, "Export directory (with int/ and hf/)")->required();
  cmd->add_option("--seqlens", a->seqlens, "Sequence lengths")->delimiter(',')->capture_default_str();
  cmd->add_option("--warmup", a->warmup, "Untimed runs per length")->capture_default_str();
  cmd->add_option("--reps", a->reps, "Timed runs per length (median)")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads of both (0: LibTorch default)")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the random token ids (with the length)")
      ->capture_default_str();
  cmd->add_option("-o,--output", a->output, "Also write the figures as JSON");
  cmd->add_option("--gemm", a->gemm,
                  "Integer GEMM: auto (AVX-512 VNNI where the CPU has it, else gemmlowp), "
                  "gemmlowp or vnni")
      ->check(CLI::IsMember({"auto", "gemmlowp", "vnni"}))
      ->capture_default_str();
  cmd->add_flag("--profile", a->profile,
                "Also time the integer runtime's stages (norm, qkv, attention, …) in --reps "
                "extra prefills per length, and print where the time goes");
  cmd->callback([a] { run_bench_int(*a); });
}

}  // namespace mq::cli
