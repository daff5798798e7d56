// mobilequant/models/llama2c_checkpoint.cpp
// Reads llama2.c's legacy checkpoint (karpathy/llama2.c `export.py --version 0`):
// a header of 7 int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len} (vocab_size negative: the classifier is not shared), then fp32 tensors
// in llama2.c order, then the unused rotary tables [seq_len, head_size/2] x 2, then
// wcls when unshared. q/k rows are in Meta's interleaved rotary layout and are
// turned into Hugging Face's here, so that the decoder is the same for every format.
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/io/scored_bpe_tokenizer.h"
#include "mobilequant/models/model_loader.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

/// Finds the tokenizer: the explicit path, else tok<vocab>.bin or tokenizer.bin beside the model.
std::string find_llama2c_tokenizer(const std::string& model_path, const std::string& explicit_path,
                                   int64_t vocab) {
  if (!explicit_path.empty()) return explicit_path;
  const fs::path dir = fs::path(model_path).parent_path();
  for (const auto& name : {"tok" + std::to_string(vocab) + ".bin", std::string("tokenizer.bin")}) {
    if (fs::exists(dir / name)) return (dir / name).string();
  }
  return "";
}

}  // namespace

Checkpoint read_llama2c_checkpoint(const std::string& path, const std::string& tokenizer_path) {
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in.good(), "llama2.c checkpoint '", path, "': cannot open file");
  const auto file_size = static_cast<int64_t>(fs::file_size(path));
  int32_t h[7] = {0};
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  MQ_CHECK(in.good(), "llama2.c checkpoint '", path, "': file of ", file_size,
           " bytes is shorter than the 28-byte header");
  const int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv_heads = h[4];
  const bool shared_classifier = h[5] > 0;
  const int64_t vocab = h[5] > 0 ? h[5] : -static_cast<int64_t>(h[5]);
  const int64_t seq_len = h[6];
  auto plausible = [](int64_t v, int64_t hi) { return v > 0 && v <= hi; };
  MQ_CHECK(plausible(dim, 1 << 16) && plausible(hidden, 1 << 18) && plausible(layers, 1024) &&
               plausible(heads, 1024) && plausible(kv_heads, 1024) && plausible(vocab, 1 << 20) &&
               plausible(seq_len, 1 << 20),
           "llama2.c checkpoint '", path, "': implausible header {dim=", dim, ", hidden_dim=",
           hidden, ", n_layers=", layers, ", n_heads=", heads, ", n_kv_heads=", kv_heads,
           ", vocab_size=", h[5], ", seq_len=", seq_len,
           "} (is this a legacy version-0 llama2.c .bin?)");
  MQ_CHECK(dim % heads == 0, "llama2.c checkpoint '", path, "': dim ", dim,
           " is not a multiple of n_heads ", heads);
  const int64_t head_size = dim / heads;
  const int64_t kv_dim = kv_heads * head_size;

  ModelConfig cfg;
  cfg.arch = Arch::kLlama;
  cfg.vocab_size = vocab;
  cfg.hidden_size = dim;
  cfg.intermediate_size = hidden;
  cfg.num_hidden_layers = layers;
  cfg.num_attention_heads = heads;
  cfg.num_key_value_heads = kv_heads;
  cfg.head_dim = head_size;
  cfg.max_position_embeddings = seq_len;
  cfg.rope_theta = 10000.0;  // llama2.c's run.c
  cfg.norm_eps = 1e-5;       // llama2.c's run.c
  cfg.tie_word_embeddings = shared_classifier;
  cfg.validate("llama2.c checkpoint '" + path + "'");

  // Expected size: header + weights + rotary tables (+ classifier).
  const int64_t per_layer = 2 * dim + dim * dim + 2 * kv_dim * dim + dim * dim + 3 * dim * hidden;
  const int64_t floats = vocab * dim + layers * per_layer + dim + seq_len * head_size +
                         (shared_classifier ? 0 : vocab * dim);
  const int64_t expected = 28 + 4 * floats;
  MQ_CHECK(file_size == expected, "llama2.c checkpoint '", path, "': file has ", file_size,
           " bytes, expected ", expected, " for the header's shapes (truncated or not a legacy ",
           "llama2.c checkpoint)");

  auto read = [&](std::vector<int64_t> shape) {                    // fp32 tensor of `shape`
    auto t = torch::empty(shape, torch::kFloat32);
    in.read(reinterpret_cast<char*>(t.data_ptr<float>()), t.numel() * 4);
    MQ_CHECK(in.good(), "llama2.c checkpoint '", path, "': truncated while reading a tensor of ",
             "shape ", t.sizes());
    return t;
  };
  auto embed = read({vocab, dim});                                 // [V, C]
  auto att_norm = read({layers, dim});                             // [L, C]
  auto wq = read({layers, dim, dim});                              // [L, H*D, C]
  auto wk = read({layers, kv_dim, dim});                           // [L, KV*D, C]
  auto wv = read({layers, kv_dim, dim});                           // [L, KV*D, C]
  auto wo = read({layers, dim, dim});                              // [L, C, H*D]
  auto ffn_norm = read({layers, dim});                             // [L, C]
  auto w1 = read({layers, hidden, dim});                           // [L, F, C] gate
  auto w2 = read({layers, dim, hidden});                           // [L, C, F] down
  auto w3 = read({layers, hidden, dim});                           // [L, F, C] up
  auto final_norm = read({dim});                                   // [C]
  read({seq_len, head_size});                                      // unused rotary tables

  Checkpoint ckpt;
  ckpt.config = cfg;
  ckpt.source = path;
  ckpt.format = "llama2c";
  auto& t = ckpt.tensors;
  t["model.embed_tokens.weight"] = embed;
  t["model.norm.weight"] = final_norm;
  if (!shared_classifier) t["lm_head.weight"] = read({vocab, dim});
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = att_norm[i];
    t[p + "self_attn.q_proj.weight"] = unpermute_rotary_rows(wq[i], heads);
    t[p + "self_attn.k_proj.weight"] = unpermute_rotary_rows(wk[i], kv_heads);
    t[p + "self_attn.v_proj.weight"] = wv[i];
    t[p + "self_attn.o_proj.weight"] = wo[i];
    t[p + "post_attention_layernorm.weight"] = ffn_norm[i];
    t[p + "mlp.gate_proj.weight"] = w1[i];
    t[p + "mlp.down_proj.weight"] = w2[i];
    t[p + "mlp.up_proj.weight"] = w3[i];
  }
  const std::string tok = find_llama2c_tokenizer(path, tokenizer_path, vocab);
  if (!tok.empty()) ckpt.tokenizer = ScoredBpeTokenizer::from_llama2c(tok, vocab);
  return ckpt;
}

}  // namespace mq
