// mobilequant/config/run_config.h
// What `mobilequant run` is told: one experiment composed of a model, a quantization preset
// (configs/quant/), a method (configs/methods/: the closed-form starting point and how it
// trains), calibration data and evaluation tasks. Resolved in this order, later wins:
//   defaults <- the method file <- its "for_quant" entry for the preset <- the run config file
//   <- every `--set key=value` (sections by `--set train.epochs=3`).
// Unknown keys are errors everywhere. A method file is a JSON object with "description",
// optional "for_quant": {"PRESET": {...}} and any run-config keys; `"quant"` in a method file
// is the method's own requirement (the float baseline's "fp") and wins over the run file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/config/eval_config.h"
#include "mobilequant/config/field_visitor.h"
#include "mobilequant/config/quantize_config.h"
#include "mobilequant/config/train_config.h"

namespace mq {

/// Calibration (and training) windows, drawn as the reference draws them.
struct CalibConfig {
  std::string data;             ///< text file ("": WikiText-2 validation under the data dir)
  std::string separator;        ///< document separator line ("": one text)
  int64_t samples = 128;        ///< windows
  int64_t seqlen = 0;           ///< window length; 0: 2048 capped at the model's context
  int64_t seed = 1337;          ///< offsets' seed (Python's random)
  int64_t batch_size = 1;       ///< windows per calibration forward pass
  std::string stats_cache;      ///< directory of reusable statistics ("": none)

  /// The one field list.
  template <class V>
  void for_each_field(V& v) {
    v("data", data, "Calibration text file (default: WikiText-2 validation)");
    v("separator", separator, "Line that ends a document in the text (\"\": one text)");
    v("samples", samples, "Number of windows");
    v("seqlen", seqlen, "Window length (0: 2048 capped at the model's context)");
    v("seed", seed, "Seed of the window offsets");
    v("batch_size", batch_size, "Windows per calibration forward pass");
    v("stats_cache", stats_cache, "Directory where calibration statistics are kept and reused");
  }
};

/// How a finished run is evaluated (the protocols of eval/perplexity.h; layer-error compares
/// with the run's float model, reloaded from `model`).
struct RunEvalConfig {
  std::vector<EvalTask> tasks = {EvalTask::kWikitext};  ///< protocols, in order
  std::vector<std::string> data;  ///< FILE (every task) or TASK=FILE; default per task
  int64_t max_length = 0;         ///< wikitext/docs/layer-error window; 0: 2048 capped
  int64_t seqlen = 0;             ///< wikitext-gptq window; 0: 2048 capped at context
  std::string separator = "<|endoftext|>";  ///< docs separator line
  int64_t batch_size = 1;         ///< windows per forward pass
  int64_t limit = -1;             ///< first N documents/windows (-1: all; layer-error: 4)

  /// The one field list.
  template <class V>
  void for_each_field(V& v) {
    v("tasks", tasks, "Protocols: wikitext, wikitext-gptq, docs, layer-error (per-block output "
                      "error against the run's float model) ([] to skip evaluation)");
    v("data", data, "Data file for every task, or TASK=FILE for one");
    v("max_length", max_length, "Window length of wikitext, docs and layer-error (0: 2048 capped)");
    v("seqlen", seqlen, "Window length of wikitext-gptq (0: 2048 capped)");
    v("separator", separator, "Document separator line of docs");
    v("batch_size", batch_size, "Windows per forward pass");
    v("limit", limit, "Score only the first N documents or windows (-1: all; layer-error: 4)");
  }
};

/// One experiment.
struct RunConfig {
  std::string description;                   ///< free text, copied to the results
  std::string model;                         ///< HF directory, .gguf or llama2.c .bin
  std::string tokenizer;                     ///< tokenizer overriding the model's ("": none)
  std::string quant = "w8a8";                ///< preset name (configs/quant/) or JSON file
  std::vector<std::string> quant_overrides;  ///< "activations.SITE.FIELD=VALUE", in order
  std::string method = "mobilequant";        ///< method name (configs/methods/) or JSON file
  QuantMethod init = QuantMethod::kRtn;      ///< closed-form starting point
  double alpha = 0.5;                        ///< SmoothQuant migration strength of `init`
  std::string device = "cpu";                ///< cpu, cuda or cuda:N
  std::string output;                        ///< run directory ("": runs/MODEL-QUANT-METHOD)
  CalibConfig calib;                         ///< calibration windows
  TrainConfig train;                         ///< training (trainer none: closed form only)
  RunEvalConfig eval;                        ///< evaluation of the result

  /// The one field list.
  template <class V>
  void for_each_field(V& v) {
    v("description", description, "Free text describing the run");
    v("model", model, "Model: a Hugging Face directory, a .gguf file or a llama2.c .bin");
    v("tokenizer", tokenizer, "Tokenizer file overriding the one found beside the model");
    v("quant", quant, "Quantization preset (configs/quant/NAME.json) or a JSON file");
    v("quant_overrides", quant_overrides,
      "Per-site changes to the preset: weights|activations.SITE|all.FIELD=VALUE");
    v("method", method, "Method (configs/methods/NAME.json) or a JSON file");
    v("init", init, "Closed-form start: rtn, smoothquant-static or smoothquant-edge");
    v("alpha", alpha, "SmoothQuant migration strength in [0, 1]");
    v("device", device, "cpu, cuda or cuda:N");
    v("output", output, "Run directory (default runs/MODEL-QUANT-METHOD)");
    v("calib", calib, "Calibration windows: data, separator, samples, seqlen, seed, ...");
    v("train", train, "Training: trainer, let_pairs, let, lwc, lrl, epochs, ...");
    v("eval", eval, "Evaluation: tasks, data, max_length, limit, ...");
  }

  /// Throws mq::Error naming `where` and the key when a field is out of range.
  void validate(const std::string& where) const;
};

/// Resolves a run config: `file` ("" for none) and `sets` over the defaults and the method
/// file found under `methods_dir` (see the file comment for the order). Validates the result.
RunConfig resolve_run_config(const std::string& file, const std::vector<std::string>& sets,
                             const std::string& methods_dir);

/// The method files under `methods_dir` (names without .json) with their descriptions.
std::vector<std::pair<std::string, std::string>> list_methods(const std::string& methods_dir);

/// The keys (dotted, e.g. "train.epochs") whose values differ between two config JSONs.
std::vector<std::string> differing_keys(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace mq
