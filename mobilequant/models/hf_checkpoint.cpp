// mobilequant/models/hf_checkpoint.cpp
// mq::read_hf_checkpoint: a Hugging Face model directory as `save_pretrained` writes it.
//   config.json                      -> ModelConfig, dispatched on model_type
//   model.safetensors                -> tensors (F32/F16/BF16 stored, returned as fp32), or
//   model.safetensors.index.json     -> {"weight_map": {tensor: shard file}} and the shards
//   tokenizer.model (optional)       -> SpmTokenizer (add_bos_token from tokenizer_config.json)
// PyTorch pickles (pytorch_model.bin) are not read.
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/io/spm_tokenizer.h"
#include "mobilequant/models/gemma.h"
#include "mobilequant/models/llama.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/models/stablelm.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

/// Parses the JSON file `path`; throws naming the file on I/O or syntax errors.
nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  MQ_CHECK(in, "'", path.string(), "': cannot open for reading");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw make_error("'", path.string(), "': malformed JSON: ", e.what());
  }
}

/// The ModelConfig of config.json `j`, by model_type.
ModelConfig config_from_hf(const nlohmann::json& j, const std::string& where) {
  MQ_CHECK(j.is_object(), where, ": expected a JSON object, found ", j.type_name());
  MQ_CHECK(j.contains("model_type"), where,
           ": no 'model_type' key (expected one of [llama, gemma, stablelm])");
  MQ_CHECK(j["model_type"].is_string(), where, ": key 'model_type' must be a string, found ",
           j["model_type"].dump());
  switch (parse_arch(j["model_type"].get<std::string>(), where + ": model_type")) {
    case Arch::kLlama: return llama_config_from_hf(j, where);
    case Arch::kGemma: return gemma_config_from_hf(j, where);
    case Arch::kStableLm: return stablelm_config_from_hf(j, where);
  }
  throw make_error(where, ": unhandled architecture");
}

/// Every tensor of a sharded checkpoint, checked against its index.
TensorMap read_sharded(const fs::path& dir, const fs::path& index_path) {
  const std::string where = index_path.string();
  const nlohmann::json index = read_json(index_path);
  MQ_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
           where, ": expected an object with a 'weight_map' object {tensor: shard file}");
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> tensor names
  for (const auto& item : index["weight_map"].items()) {
    MQ_CHECK(item.value().is_string(), where, ": weight_map['", item.key(),
             "'] must be a shard file name, found ", item.value().dump());
    by_shard[item.value().get<std::string>()].push_back(item.key());
  }
  MQ_CHECK(!by_shard.empty(), where, ": weight_map lists no tensors");

  TensorMap out;
  std::map<std::string, std::string> origin;  // tensor -> shard it came from
  for (const auto& [shard, names] : by_shard) {
    const fs::path shard_path = dir / shard;
    MQ_CHECK(fs::is_regular_file(shard_path), where, ": shard '", shard, "' (listed for tensor '",
             names.front(), "' and ", names.size() - 1, " more) not found at '",
             shard_path.string(), "'");
    TensorMap part = read_safetensors(shard_path.string());
    for (const auto& name : names)
      MQ_CHECK(part.count(name), where, ": tensor '", name, "' is listed in shard '", shard,
               "' but '", shard_path.string(), "' does not contain it");
    for (auto& kv : part) {
      auto prev = origin.find(kv.first);
      MQ_CHECK(prev == origin.end(), where, ": tensor '", kv.first, "' is stored in both '",
               prev->second, "' and '", shard, "'");
      origin[kv.first] = shard;
      out.emplace(kv.first, std::move(kv.second));
    }
  }
  return out;
}

/// The tokenizer: `explicit_path` if given, else tokenizer.model beside the model, else null.
std::shared_ptr<Tokenizer> find_tokenizer(const fs::path& dir, const std::string& explicit_path) {
  bool adds_bos = true;  // LlamaTokenizer's and GemmaTokenizer's default
  const fs::path tok_config = dir / "tokenizer_config.json";
  if (fs::is_regular_file(tok_config)) {
    const nlohmann::json tc = read_json(tok_config);
    if (tc.is_object() && tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean())
      adds_bos = tc["add_bos_token"].get<bool>();
  }
  if (!explicit_path.empty()) {
    MQ_CHECK(fs::exists(explicit_path), "tokenizer '", explicit_path, "': no such file");
    MQ_CHECK(fs::path(explicit_path).extension() == ".model", "tokenizer '", explicit_path,
             "': a Hugging Face model takes a SentencePiece tokenizer.model here");
    return std::make_shared<SpmTokenizer>(explicit_path, adds_bos);
  }
  const fs::path beside = dir / "tokenizer.model";
  if (fs::is_regular_file(beside)) return std::make_shared<SpmTokenizer>(beside.string(), adds_bos);
  return nullptr;
}

}  // namespace

Checkpoint read_hf_checkpoint(const std::string& dir_str, const std::string& tokenizer_path) {
  const fs::path dir(dir_str);
  const fs::path config_path = dir / "config.json";
  MQ_CHECK(fs::is_regular_file(config_path), "model '", dir_str,
           "': no config.json (expected a Hugging Face model directory with config.json and "
           "model.safetensors)");
  Checkpoint ckpt;
  ckpt.source = dir_str;
  ckpt.format = "hf";
  ckpt.config = config_from_hf(read_json(config_path), config_path.string());

  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::is_regular_file(single)) {
    ckpt.tensors = read_safetensors(single.string());
  } else if (fs::is_regular_file(index)) {
    ckpt.tensors = read_sharded(dir, index);
  } else {
    throw make_error("model '", dir_str,
                     "': neither model.safetensors nor model.safetensors.index.json found",
                     fs::exists(dir / "pytorch_model.bin")
                         ? " (pytorch_model.bin is not read: re-save with safe_serialization)"
                         : "");
  }
  ckpt.tokenizer = find_tokenizer(dir, tokenizer_path);
  return ckpt;
}

}  // namespace mq
