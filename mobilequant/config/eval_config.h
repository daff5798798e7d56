// mobilequant/config/eval_config.h
// What `mobilequant eval` is told, as one plain struct that a JSON file (configs/eval/*.json),
// the command-line flags and `--set key=value` fill (config/config_json.h). The protocols
// themselves are in eval/perplexity.h and eval/layer_error.h; this struct only names them and
// their parameters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/field_visitor.h"

namespace mq {

/// The perplexity protocols of eval/perplexity.h and the per-layer error of eval/layer_error.h.
enum class EvalTask {
  kWikitext,      ///< "wikitext": lm-eval v0.3 word perplexity (what MobileQuant reports)
  kWikitextGptq,  ///< "wikitext-gptq": GPTQ/OmniQuant token perplexity
  kDocs,          ///< "docs": documents of any text file (e.g. TinyStories)
  kLayerError,    ///< "layer-error": each block's output error against a float reference
};

/// Returns "wikitext", "wikitext-gptq", "docs" or "layer-error".
const char* to_string(EvalTask task);
/// Parses a task name; throws mq::Error naming `where`, the name and the allowed set.
EvalTask parse_eval_task(const std::string& name, const std::string& where);

/// The values of EvalTask, for parse_enum and the allowed-set messages.
template <>
struct EnumValues<EvalTask> {
  /// Every EvalTask, in declaration order.
  static const std::vector<EvalTask>& values();
};

/// What computes the logits.
enum class EvalRuntime {
  kTorch,  ///< "torch": the LibTorch model (float, or simulated quantization)
  kInt,    ///< "int": the integer-only runtime (runtime/) on an export's integer model
};
/// Returns "torch" or "int".
const char* to_string(EvalRuntime r);
/// The values of EvalRuntime.
template <>
struct EnumValues<EvalRuntime> {
  /// Every EvalRuntime, in declaration order.
  static const std::vector<EvalRuntime>& values();
};

/// One evaluation: the model, the protocols and their parameters, where the results go.
struct EvalConfig {
  std::string model;                        ///< HF directory, .gguf or llama2.c .bin
  std::string tokenizer;                    ///< tokenizer file overriding the model's ("": none)
  std::string reference;                    ///< layer-error: the float model ("": none)
  std::string device = "cpu";               ///< cpu, cuda or cuda:N
  std::string dtype = "fp32";               ///< fp32, bf16 or fp16 (float32, ... accepted)
  std::vector<EvalTask> tasks;              ///< protocols to run, in order
  std::vector<std::string> data;            ///< data files: FILE (every task) or TASK=FILE
  int64_t max_length = 0;                   ///< wikitext/docs window; 0: 2048 capped at context
  int64_t seqlen = 0;                       ///< wikitext-gptq window; 0: 2048 capped at context
  std::string separator = "<|endoftext|>";  ///< docs: a line holding only this ends a document
  int64_t batch_size = 1;                   ///< windows of equal length per forward pass
  int64_t limit = -1;                       ///< first N documents/windows (-1: all; layer-error 4)
  std::string output;                       ///< results JSON file ("": none)
  EvalRuntime runtime = EvalRuntime::kTorch;  ///< what computes the logits
  int64_t threads = 0;                      ///< integer runtime threads (0: every core)
  bool sites = false;                       ///< runtime int: per-site code comparison too
  std::string compare_device;               ///< runtime int: fp32 simulation here too ("": no)

  /// The one field list (config/field_visitor.h).
  template <class V>
  void for_each_field(V& v) {
    v("model", model, "Model: a Hugging Face directory, a .gguf file or a llama2.c .bin");
    v("tokenizer", tokenizer, "Tokenizer file overriding the one found beside the model");
    v("reference", reference, "layer-error: the float model the evaluated one is compared with "
                              "(a Hugging Face directory, a .gguf file or a llama2.c .bin)");
    v("device", device, "cpu, cuda or cuda:N");
    v("dtype", dtype, "Parameter dtype: fp32, bf16 or fp16");
    v("tasks", tasks, "Protocols: wikitext, wikitext-gptq, docs, layer-error");
    v("data", data, "Data file for every task, or TASK=FILE for one");
    v("max_length", max_length,
      "Window length of wikitext, docs and layer-error (0: 2048 capped at context)");
    v("seqlen", seqlen, "Window length of wikitext-gptq (0: 2048 capped at context)");
    v("separator", separator, "Document separator line of docs");
    v("batch_size", batch_size, "Windows of equal length per forward pass");
    v("limit", limit, "Score only the first N documents or windows (-1: all; layer-error: 4 "
                      "windows)");
    v("output", output, "Write the results as JSON to this file");
    v("runtime", runtime, "torch (LibTorch: float or simulated quantization) or int (the "
                          "integer runtime on an export directory, compared with its simulation)");
    v("threads", threads, "Threads of the integer runtime (0: every core)");
    v("sites", sites, "runtime int: also compare every activation site's codes with the fp64 "
                      "simulation on the first window, and name the first site that differs");
    v("compare_device", compare_device,
      "runtime int: also run the fp32 simulation on this device (cuda, cuda:N; TF32 off) and "
      "report its greedy agreement with the CPU's fp32 simulation and with the integer runtime "
      "(\"\": no)");
  }

  /// Throws mq::Error naming `where`, the key, the value and what is allowed when a field is
  /// out of range: no tasks, lengths < 0, batch_size < 1, limit < -1, an unknown dtype or
  /// device, layer-error without a reference or with the integer runtime. The model path is
  /// not checked (a config file may leave it to the command line).
  void validate(const std::string& where) const;
};

}  // namespace mq
