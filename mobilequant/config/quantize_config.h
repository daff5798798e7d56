// mobilequant/config/quantize_config.h
// What `mobilequant quantize` is told (the closed-form methods of reference-implementation.md
// §7), as one plain struct filled from a JSON file, flags and `--set key=value`, and the
// manifest that a quantized model directory carries so that `mobilequant eval` can rebuild the
// simulated-quantization model from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/config/field_visitor.h"
#include "mobilequant/config/quant_config.h"

namespace mq {

/// The closed-form quantization methods (no training).
enum class QuantMethod {
  kRtn,                ///< "rtn": static min/max ranges, no transform
  kSmoothQuantStatic,  ///< "smoothquant-static": norm -> q/k/v and norm -> gate/up scales
  kSmoothQuantEdge,    ///< "smoothquant-edge": + up -> down and v -> o (per KV head)
};
/// "rtn", "smoothquant-static" or "smoothquant-edge".
const char* to_string(QuantMethod m);
/// Every QuantMethod, for parse_enum.
template <>
struct EnumValues<QuantMethod> {
  /// Every QuantMethod.
  static const std::vector<QuantMethod>& values();
};

/// One closed-form quantization: model, preset, method, calibration data, output.
struct QuantizeConfig {
  std::string model;                         ///< HF directory, .gguf or llama2.c .bin
  std::string tokenizer;                     ///< tokenizer overriding the model's ("": none)
  std::string quant = "w8a8";                ///< preset name (configs/quant/) or JSON file
  std::vector<std::string> quant_overrides;  ///< "activations.SITE.FIELD=VALUE", applied in order
  QuantMethod method = QuantMethod::kRtn;    ///< closed-form method
  double alpha = 0.5;                        ///< SmoothQuant migration strength (stablelm: 0.6)
  std::string calib_data;                    ///< calibration text file
  std::string calib_separator;               ///< document separator line ("": one text)
  int64_t calib_samples = 128;               ///< calibration windows
  int64_t calib_seqlen = 0;                  ///< window length; 0: 2048 capped at the context
  int64_t seed = 1337;                       ///< window sampling seed (the reference's)
  int64_t batch_size = 1;                    ///< windows per forward pass
  std::string device = "cpu";                ///< cpu, cuda or cuda:N
  std::string stats_cache;                   ///< directory of reusable statistics ("": none)
  std::string output;                        ///< the quantized model directory to write

  /// The one field list (config/field_visitor.h).
  template <class V>
  void for_each_field(V& v) {
    v("model", model, "Model: a Hugging Face directory, a .gguf file or a llama2.c .bin");
    v("tokenizer", tokenizer, "Tokenizer file overriding the one found beside the model");
    v("quant", quant, "Quantization preset (configs/quant/NAME.json) or a JSON file");
    v("quant_overrides", quant_overrides,
      "Per-site changes to the preset: weights|activations.SITE|all.FIELD=VALUE");
    v("method", method, "rtn, smoothquant-static or smoothquant-edge");
    v("alpha", alpha, "SmoothQuant migration strength in [0, 1]");
    v("calib_data", calib_data, "Calibration text file");
    v("calib_separator", calib_separator, "Line that ends a document in calib_data (\"\": none)");
    v("calib_samples", calib_samples, "Number of calibration windows");
    v("calib_seqlen", calib_seqlen, "Calibration window length (0: 2048 capped at context)");
    v("seed", seed, "Seed of the window offsets (Python's random)");
    v("batch_size", batch_size, "Windows per forward pass");
    v("device", device, "cpu, cuda or cuda:N");
    v("stats_cache", stats_cache, "Directory where calibration statistics are kept and reused");
    v("output", output, "Directory to write the quantized model to");
  }

  /// Throws mq::Error naming `where`, the key and the value when a field is out of range.
  void validate(const std::string& where) const;
};

/// What a quantized model directory says about itself (quantization.json).
struct QuantizedManifest {
  std::string base_model;        ///< the float model it came from (absolute path)
  std::string tokenizer_source;  ///< model file or tokenizer the tokenizer is read from
  std::string method;            ///< e.g. "smoothquant-edge"
  std::string created_by;        ///< the command line
  std::string git_revision;      ///< of the code that wrote it
  nlohmann::json settings;       ///< the resolved QuantizeConfig (or training config)
  QuantConfig quant;             ///< every site's spec
};

/// Writes `m` as JSON to `path` (atomically).
void write_quantized_manifest(const std::string& path, const QuantizedManifest& m);
/// Reads a manifest; errors name the file and the key.
QuantizedManifest read_quantized_manifest(const std::string& path);

}  // namespace mq
