// mobilequant/cli/commands.h
// The subcommands of the `mobilequant` executable; each file cli/<name>_command.cpp adds one.
// CLI11 appears only in cli/; the commands call library functions and print.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "mobilequant/calib/calibration_data.h"
#include "mobilequant/config/eval_config.h"
#include "mobilequant/config/quantize_config.h"
#include "mobilequant/config/run_config.h"
#include "mobilequant/models/model_loader.h"

namespace mq::cli {

/// Options every command that loads a model shares.
struct ModelArgs {
  std::string model;      ///< HF directory, .gguf or llama2.c .bin
  std::string tokenizer;  ///< optional tokenizer override
  std::string device = "cpu";
  std::string dtype = "fp32";
};

/// Adds --model/--tokenizer/--device/--dtype to `cmd`, bound to `args`.
void add_model_args(CLI::App& cmd, ModelArgs& args);
/// Validates `args` and returns LoadOptions; throws mq::Error naming the bad option.
LoadOptions to_load_options(const ModelArgs& args);
/// Parses "cpu", "cuda", "cuda:N"; throws naming the value (and when CUDA is unavailable).
torch::Device parse_device(const std::string& name);
/// Parses "fp32", "bf16", "fp16"; throws naming the value and the allowed set.
torch::Dtype parse_dtype(const std::string& name);

/// The repository root: $MQ_SOURCE_DIR, else the path compiled in.
std::filesystem::path source_dir();
/// Where default data files live: $MQ_DATA_DIR, else $MQ_SHARED_DIR/data, else
/// <repo>/../shared/data.
std::filesystem::path data_dir();
/// Where quantization presets live: <repo>/configs/quant.
std::string presets_dir();
/// This process's command line, arguments space-joined.
std::string command_line();
/// Host name, CPU model, threads and accelerator of this machine, for JSON records.
nlohmann::json machine_info(const torch::Device& device);
/// Current UTC time as ISO 8601.
std::string utc_now();
/// $MQ_GIT_REVISION, else the git revision of the source tree ("unknown" outside a checkout).
std::string git_revision();
/// Writes `j` to `path` through a temporary file in the same directory and a rename.
void write_json_atomically(const nlohmann::json& j, const std::string& path);

/// The default calibration text: WikiText-2's validation split (disjoint from the test split
/// the WikiText protocols evaluate), under data_dir().
std::string default_calib_data();
/// A preset (configs/quant/ name or JSON file) with its per-site overrides applied in order;
/// `where` names the overrides' origin in errors.
QuantConfig resolve_quant(const std::string& preset, const std::vector<std::string>& overrides,
                          const std::string& where);
/// Loads a model that has a tokenizer and whose shapes `quant` fits (group sizes); errors
/// name the model and `where` (the preset's origin).
LoadedModel load_quantizable_model(const std::string& model, const LoadOptions& load,
                                   const QuantConfig& quant, const std::string& where);
/// Calibration windows' options; seqlen 0 means 2048 capped at the model's context.
CalibrationOptions calibration_options(int64_t samples, int64_t seqlen, int64_t seed,
                                       const std::string& separator, const ModelConfig& model);
/// The key of reusable calibration statistics: the model's and the text's identity (absolute
/// path, size, modification time), the windows and the device type.
std::string calibration_cache_key(const std::string& model, const std::string& calib,
                                  const CalibrationOptions& opts, const torch::Device& device);
/// The manifest of a quantized model directory written by this process.
QuantizedManifest make_manifest(const std::string& model, const std::string& tokenizer,
                                const std::string& method, const nlohmann::json& settings);

/// What evaluate_tasks returns: one JSON entry per task and a Markdown table of the figures.
struct EvalOutcome {
  nlohmann::json results;  ///< per task: protocol, metrics, counts, data file, seconds
  std::string table;       ///< "| task | protocol | metric | value | tokens | docs |" rows
};
/// The data file of `task`: data TASK=FILE, data FILE, else the default under data_dir().
std::string resolve_eval_data(const EvalConfig& a, EvalTask task);
/// Runs every task of `a` on `model` (through whatever hooks it has installed); `inputs` are
/// the (path, text) of each task, read beforehand so that a bad path fails early.
EvalOutcome evaluate_tasks(CausalLm& model, const Tokenizer& tokenizer, const EvalConfig& a,
                           const std::vector<std::pair<std::string, std::string>>& inputs,
                           const std::function<torch::Tensor(const torch::Tensor&)>& logits = {});

/// `eval --runtime int`: the integer runtime (runtime/) on the export `a.model` and, on the
/// same windows, the simulated model rebuilt from the export: perplexity of both, their
/// relative difference and the greedy (argmax) agreement per task. `inputs` as above.
void run_eval_int(const EvalConfig& a,
                  const std::vector<std::pair<std::string, std::string>>& inputs);

/// Adds `bench int` to the `bench` command: integer-runtime prefill latency against the float
/// LibTorch forward of the same export on the CPU.
void add_bench_int_subcommand(CLI::App& bench);

/// `mobilequant quantize`: closed-form quantization (RTN, SmoothQuant-Static/Edge).
void add_quantize_command(CLI::App& app);
/// `mobilequant eval`: perplexity by the WikiText (lm-eval, GPTQ) and document protocols.
void add_eval_command(CLI::App& app);
/// `mobilequant generate`: greedy generation from a prompt.
void add_generate_command(CLI::App& app);
/// `mobilequant bench ...`: speed measurements.
void add_bench_command(CLI::App& app);
/// `mobilequant info`: what a checkpoint holds.
void add_info_command(CLI::App& app);
/// `mobilequant run`: one experiment (calibrate, train, fold, save, evaluate) in a run directory.
void add_run_command(CLI::App& app);
/// `mobilequant sweep`: a grid of runs and their results table.
void add_sweep_command(CLI::App& app);
/// `mobilequant export`: deployment formats of a finished run, and the export linter.
void add_export_command(CLI::App& app);

/// How run_experiment treats an existing run directory.
struct RunFlags {
  bool resume = false;  ///< continue from its checkpoints (the config must be the same)
  bool force = false;   ///< delete it and start again
  bool quiet = false;   ///< no progress bar (sweeps print one line per run)
};
/// Runs one resolved experiment; returns its results.json.
nlohmann::json run_experiment(const RunConfig& c, const RunFlags& flags);
/// The checks run_experiment makes before loading anything (files exist; the method can train
/// the preset); throws mq::Error naming the key. Sweeps run it on every point first.
void check_run_config(const RunConfig& c);
/// Where method configs live: <repo>/configs/methods.
std::string methods_dir();

}  // namespace mq::cli
