// mobilequant/models/gguf_checkpoint.cpp
// read_gguf_checkpoint: a GGUF v3 file -> Checkpoint, the way Hugging Face `transformers`
// loads one (modeling_gguf_pytorch_utils.py): hyperparameters from `<arch>.*` metadata,
// tensors dequantized to fp32 and renamed to Hugging Face names, llama's q/k rows
// un-permuted (llama.cpp's converter interleaves them for its rotary kernel), gemma's norm
// weights stored as 1 + w brought back to w, and the tokenizer rebuilt from `tokenizer.ggml.*`.
#include <filesystem>
#include <regex>

#include "mobilequant/core/error.h"
#include "mobilequant/io/bpe_tokenizer.h"
#include "mobilequant/io/gguf_reader.h"
#include "mobilequant/io/scored_bpe_tokenizer.h"
#include "mobilequant/io/spm_tokenizer.h"
#include "mobilequant/models/model_loader.h"

namespace mq {

namespace {

namespace fs = std::filesystem;

// Hugging Face names of the per-block GGUF tensors (blk.N.<gguf>.{weight,bias}).
const std::map<std::string, std::string>& block_names() {
  static const std::map<std::string, std::string> names{
      {"attn_q", "self_attn.q_proj"},         {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},         {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},          {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},          {"attn_norm", "input_layernorm"},
      {"ffn_norm", "post_attention_layernorm"},
  };
  return names;
}

// The Hugging Face name of a GGUF tensor; throws naming it when there is none.
std::string hf_name(const std::string& gguf, const std::string& path) {
  static const std::regex block(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  static const std::regex global(R"((token_embd|output_norm|output)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(gguf, m, block)) {
    auto it = block_names().find(m[2].str());
    if (it != block_names().end()) {
      return "model.layers." + m[1].str() + "." + it->second + "." + m[3].str();
    }
  } else if (std::regex_match(gguf, m, global)) {
    const std::string what = m[1].str();
    if (what == "token_embd") return "model.embed_tokens." + m[2].str();
    if (what == "output_norm") return "model.norm." + m[2].str();
    return "lm_head." + m[2].str();
  }
  throw make_error("gguf '", path, "': tensor '", gguf,
                   "' has no Hugging Face counterpart in this loader (unsupported model "
                   "feature, e.g. rope_freqs or q/k norms)");
}

// Hyperparameters from `<arch>.*` metadata (transformers' GGUF_CONFIG_MAPPING semantics).
ModelConfig config_from_metadata(const GgufReader& r, const std::string& arch_name) {
  const std::string& path = r.path();
  const std::string p = arch_name + ".";
  ModelConfig cfg;
  if (arch_name == "llama") {
    cfg.arch = Arch::kLlama;
  } else if (arch_name == "gemma") {
    cfg.arch = Arch::kGemma;
    cfg.norm = NormKind::kRmsOnePlus;
    cfg.hidden_act = Activation::kGeluTanh;
    cfg.scale_embeddings = true;
  } else if (arch_name == "stablelm") {
    cfg.arch = Arch::kStableLm;
    cfg.norm = NormKind::kLayerNorm;
  } else {
    throw make_error("gguf '", path, "': unsupported GGUF architecture '", arch_name,
                     "' (general.architecture); supported: llama, gemma, stablelm");
  }
  cfg.hidden_size = r.get_int(p + "embedding_length");
  cfg.intermediate_size = r.get_int(p + "feed_forward_length");
  cfg.num_hidden_layers = r.get_int(p + "block_count");
  cfg.num_attention_heads = r.get_int(p + "attention.head_count");
  cfg.num_key_value_heads = r.get_int(p + "attention.head_count_kv", cfg.num_attention_heads);
  MQ_CHECK(cfg.num_attention_heads > 0, "gguf '", path, "': ", p,
           "attention.head_count must be positive, got ", cfg.num_attention_heads);
  cfg.head_dim = r.get_int(p + "attention.key_length", cfg.hidden_size / cfg.num_attention_heads);
  const int64_t value_length = r.get_int(p + "attention.value_length", cfg.head_dim);
  MQ_CHECK(value_length == cfg.head_dim, "gguf '", path, "': ", p, "attention.value_length (",
           value_length, ") differs from the key length ", cfg.head_dim, " (unsupported)");
  cfg.max_position_embeddings = r.get_int(p + "context_length", cfg.max_position_embeddings);
  cfg.rope_theta = r.get_float(p + "rope.freq_base", cfg.rope_theta);
  const std::string scaling = r.get_string(p + "rope.scaling.type", "none");
  MQ_CHECK(scaling == "none", "gguf '", path, "': ", p, "rope.scaling.type = '", scaling,
           "' is unsupported (only unscaled RoPE is implemented)");
  const int64_t rot = r.get_int(p + "rope.dimension_count", cfg.head_dim);
  if (cfg.arch == Arch::kStableLm) {
    cfg.norm_eps = r.get_float(p + "attention.layer_norm_epsilon", cfg.norm_eps);
    cfg.partial_rotary_factor = static_cast<double>(rot) / static_cast<double>(cfg.head_dim);
    cfg.attention_bias = r.has_tensor("blk.0.attn_q.bias");
    MQ_CHECK(r.has_tensor("blk.0.ffn_norm.weight"), "gguf '", path,
             "': stablelm without blk.0.ffn_norm (use_parallel_residual) is unsupported");
  } else {
    cfg.norm_eps = r.get_float(p + "attention.layer_norm_rms_epsilon", cfg.norm_eps);
    MQ_CHECK(rot == cfg.head_dim, "gguf '", path, "': ", p, "rope.dimension_count = ", rot,
             ", expected the head dimension ", cfg.head_dim, " (partial rotary is unsupported for ",
             arch_name, ")");
    cfg.attention_bias = r.has_tensor("blk.0.attn_q.bias");
    cfg.o_proj_bias = r.has_tensor("blk.0.attn_output.bias");
    cfg.mlp_bias = r.has_tensor("blk.0.ffn_up.bias");
  }
  cfg.tie_word_embeddings = !r.has_tensor("output.weight");
  // The vocabulary: metadata, else the token list, else the embedding's rows.
  if (r.has(p + "vocab_size")) {
    cfg.vocab_size = r.get_int(p + "vocab_size");
  } else if (r.has("tokenizer.ggml.tokens")) {
    cfg.vocab_size = static_cast<int64_t>(r.get_string_array("tokenizer.ggml.tokens").size());
  } else {
    const auto& e = r.tensor_info("token_embd.weight");
    cfg.vocab_size = e.ne.size() == 2 ? e.ne[1] : 0;
  }
  cfg.bos_token_id = r.get_int("tokenizer.ggml.bos_token_id", cfg.bos_token_id);
  cfg.eos_token_id = r.get_int("tokenizer.ggml.eos_token_id", cfg.eos_token_id);
  cfg.validate("gguf '" + path + "'");
  return cfg;
}

// The tokenizer that `tokenizer.ggml.*` describes, or null when the file has none.
std::shared_ptr<Tokenizer> tokenizer_from_metadata(const GgufReader& r) {
  if (!r.has("tokenizer.ggml.model")) return nullptr;
  const std::string where = "gguf '" + r.path() + "'";
  const std::string kind = r.get_string("tokenizer.ggml.model");
  const auto& tokens = r.get_string_array("tokenizer.ggml.tokens");
  if (kind == "gpt2") {
    BpeTokenizer::Options opts;
    opts.bos_id = r.get_int("tokenizer.ggml.bos_token_id", -1);
    opts.eos_id = r.get_int("tokenizer.ggml.eos_token_id", -1);
    opts.adds_bos = r.get_bool("tokenizer.ggml.add_bos_token", false);
    opts.pre = BpeTokenizer::parse_pre_tokenizer(r.get_string("tokenizer.ggml.pre", "default"),
                                                 where);
    std::vector<std::string> merges;
    if (r.has("tokenizer.ggml.merges")) merges = r.get_string_array("tokenizer.ggml.merges");
    std::vector<int32_t> types;
    if (r.has("tokenizer.ggml.token_type")) {
      for (int64_t t : r.get_int_array("tokenizer.ggml.token_type")) {
        types.push_back(static_cast<int32_t>(t));
      }
    }
    return std::make_shared<BpeTokenizer>(tokens, merges, std::move(types), opts, where);
  }
  if (kind == "llama") {
    ScoredBpeTokenizer::Options opts;
    opts.unk_id = r.get_int("tokenizer.ggml.unknown_token_id", opts.unk_id);
    opts.bos_id = r.get_int("tokenizer.ggml.bos_token_id", opts.bos_id);
    opts.eos_id = r.get_int("tokenizer.ggml.eos_token_id", opts.eos_id);
    opts.add_dummy_prefix = r.get_bool("tokenizer.ggml.add_space_prefix", opts.add_dummy_prefix);
    opts.adds_bos = r.get_bool("tokenizer.ggml.add_bos_token", true);
    std::vector<float> scores;
    if (r.has("tokenizer.ggml.scores")) {
      for (double s : r.get_float_array("tokenizer.ggml.scores")) {
        scores.push_back(static_cast<float>(s));
      }
    }
    MQ_CHECK(scores.size() == tokens.size(), where, ": tokenizer.ggml.scores has ",
             scores.size(), " entries, expected one per token (", tokens.size(), ")");
    return std::make_shared<ScoredBpeTokenizer>(tokens, std::move(scores), opts);
  }
  throw make_error(where, ": unsupported tokenizer.ggml.model '", kind,
                   "' (supported: gpt2, llama)");
}

}  // namespace

Checkpoint read_gguf_checkpoint(const std::string& path, const std::string& tokenizer_path) {
  GgufReader reader(path);
  const std::string arch_name = reader.get_string("general.architecture");
  Checkpoint ckpt;
  ckpt.source = path;
  ckpt.format = "gguf";
  ckpt.config = config_from_metadata(reader, arch_name);
  const ModelConfig& cfg = ckpt.config;

  for (const GgufTensorInfo& info : reader.tensor_infos()) {
    const std::string name = hf_name(info.name, path);
    torch::Tensor t = reader.tensor(info.name);  // fp32, shape ne reversed
    if (cfg.arch == Arch::kLlama) {
      // llama.cpp permutes q/k rows [n_heads*head_dim, C] into Meta's interleaved order.
      if (info.name.find(".attn_q.") != std::string::npos) {
        t = unpermute_rotary_rows(t, cfg.num_attention_heads);
      } else if (info.name.find(".attn_k.") != std::string::npos) {
        t = unpermute_rotary_rows(t, cfg.num_key_value_heads);
      }
    } else if (cfg.arch == Arch::kGemma && info.name.find("norm.weight") != std::string::npos) {
      t = t - 1.0f;  // llama.cpp stores gemma's RMSNorm weight as 1 + w
    }
    MQ_CHECK(ckpt.tensors.emplace(name, t).second, "gguf '", path, "': tensor '", info.name,
             "' maps to '", name, "', which another tensor already filled");
  }

  if (!tokenizer_path.empty()) {
    MQ_CHECK(fs::path(tokenizer_path).extension() == ".model", "tokenizer '", tokenizer_path,
             "': a GGUF model carries its own tokenizer; an override must be a SentencePiece "
             ".model file");
    ckpt.tokenizer = std::make_shared<SpmTokenizer>(
        tokenizer_path, reader.get_bool("tokenizer.ggml.add_bos_token", true));
  } else {
    ckpt.tokenizer = tokenizer_from_metadata(reader);
  }
  return ckpt;
}

}  // namespace mq
