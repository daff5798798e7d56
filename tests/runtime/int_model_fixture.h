// tests/runtime/int_model_fixture.h
// Test support for the integer runtime: a tiny safetensors writer and a synthetic integer
// model (docs/integer-model.md layout, random codes, valid multipliers) written to a temp dir.
// Torch-free, so that runtime tests do not depend on LibTorch.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "mobilequant/core/file_util.h"

namespace mq::test {

/// One tensor to write: safetensors dtype name, shape and raw little-endian bytes.
struct RawTensor {
  std::string dtype;            ///< "U8", "I16", "I32", "I64", "F32", …
  std::vector<int64_t> shape;   ///< dimensions
  std::vector<uint8_t> bytes;   ///< data
};

/// Packs values of T into a RawTensor.
template <typename T>
RawTensor raw_tensor(const std::string& dtype, std::vector<int64_t> shape,
                     const std::vector<T>& values) {
  RawTensor r{dtype, std::move(shape), std::vector<uint8_t>(values.size() * sizeof(T))};
  if (!values.empty()) std::memcpy(r.bytes.data(), values.data(), r.bytes.size());
  return r;
}

/// Writes `tensors` as a .safetensors file (with a "__metadata__" entry).
inline void write_safetensors(const std::string& path,
                              const std::map<std::string, RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "mobilequant-test"}};
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t end = offset + static_cast<int64_t>(t.bytes.size());
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  const std::string h = header.dump();
  std::ofstream out(path, std::ios::binary);
  uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& [name, t] : tensors) {
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  }
}

/// Fraction bits of the fixture's softmax exponentials: the most the format allows
/// (export's kExpLutMaxBits; 64 positions would allow 56).
inline constexpr int kFixtureExpBits = 52;

/// The shape of the synthetic model (defaults: the brief's tiny 2-layer model).
struct TinyIntModelSpec {
  int64_t c = 16, f = 32, h = 2, kv = 1, d = 8, v = 50, p = 64, layers = 2;
  bool tied = true;
  bool pack_w2 = true;               ///< write mlp.w2 as packed 4-bit codes
  uint32_t seed = 1;
  std::string omit;                  ///< a tensor name to leave out
  std::string reshape;               ///< a tensor name to write with a wrong shape
  bool bad_eps_shift = false;        ///< block 0's input_layernorm.eps_shift = 49 (out of range)
};

/// Writes manifest.json and model.safetensors of a random but valid integer model to `dir`.
inline void write_tiny_int_model(const std::filesystem::path& dir, const TinyIntModelSpec& s) {
  std::mt19937 rng(s.seed);
  auto uni = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  std::map<std::string, RawTensor> ts;
  nlohmann::json acts = nlohmann::json::object();
  nlohmann::json weights = nlohmann::json::object();
  auto add = [&](const std::string& name, RawTensor t) {
    if (name == s.omit) return;
    if (name == s.reshape) t.shape.push_back(1);
    ts[name] = std::move(t);
  };
  // 62-bit multipliers M in [2^62, 2^63); the shifts below are n = 31 + those of a 31-bit M.
  auto mult = [&]() { return uni(int64_t{1} << 62, INT64_MAX); };
  auto add_mult = [&](const std::string& prefix, int32_t shift, const std::string& mk = "multiplier",
                      const std::string& sk = "shift") {
    add(prefix + "." + mk, raw_tensor<int64_t>("I64", {1}, {mult()}));
    add(prefix + "." + sk, raw_tensor<int32_t>("I32", {1}, {shift + 31}));
  };
  auto site = [&](const std::string& name, int bits) {
    const int32_t z = static_cast<int32_t>(int64_t{1} << (bits - 1));
    acts[name] = {{"bits", bits}, {"scale", 0.01}, {"zero_point", z}};
    return bits;
  };
  auto linear = [&](const std::string& prefix, int64_t n, int64_t k, int shift, bool packed) {
    std::vector<uint8_t> codes;
    if (packed) {
      for (int64_t i = 0; i < n * k / 2; ++i) codes.push_back(static_cast<uint8_t>(uni(0, 255)));
      add(prefix + ".weight_q", raw_tensor<uint8_t>("U8", {n, k / 2}, codes));
    } else {
      for (int64_t i = 0; i < n * k; ++i) codes.push_back(static_cast<uint8_t>(uni(0, 255)));
      add(prefix + ".weight_q", raw_tensor<uint8_t>("U8", {n, k}, codes));
    }
    weights[prefix + ".weight"] = {{"bits", packed ? 4 : 8}, {"granularity", "per_channel"},
                                   {"symmetric", false}, {"packed", packed}};
    std::vector<float> sc(static_cast<size_t>(n), 0.01f);
    std::vector<int32_t> zp, sh;
    std::vector<int64_t> mm;
    for (int64_t i = 0; i < n; ++i) {
      zp.push_back(static_cast<int32_t>(uni(0, packed ? 15 : 255)));
      mm.push_back(mult());
      sh.push_back(shift + 31);
    }
    add(prefix + ".weight_scale", raw_tensor<float>("F32", {n}, sc));
    add(prefix + ".weight_zero_point", raw_tensor<int32_t>("I32", {n}, zp));
    add(prefix + ".requant_multiplier", raw_tensor<int64_t>("I64", {n}, mm));
    add(prefix + ".requant_shift", raw_tensor<int32_t>("I32", {n}, sh));
  };
  auto norm = [&](const std::string& prefix) {
    std::vector<uint16_t> w;
    std::vector<int64_t> gm;
    std::vector<int32_t> gn;
    for (int64_t i = 0; i < s.c; ++i) {
      w.push_back(static_cast<uint16_t>(uni(0, 65535)));
      gm.push_back(uni(0, 1) ? mult() : -mult());
      gn.push_back(static_cast<int32_t>(uni(28, 34) + 31));
    }
    add(prefix + ".weight_q", raw_tensor<uint16_t>("U16", {s.c}, w));
    add(prefix + ".weight_scale", raw_tensor<float>("F32", {1}, {0.001f}));
    add(prefix + ".weight_zero_point", raw_tensor<int32_t>("I32", {1}, {32768}));
    add_mult(prefix, 20, "input_multiplier", "input_shift");
    add(prefix + ".gain_multiplier", raw_tensor<int64_t>("I64", {s.c}, gm));
    add(prefix + ".gain_shift", raw_tensor<int32_t>("I32", {s.c}, gn));
    add(prefix + ".eps_term", raw_tensor<int64_t>("I64", {1}, {int64_t{3} << 40}));
    add(prefix + ".eps_shift",
        raw_tensor<int32_t>("I32", {1}, {s.bad_eps_shift && prefix == "model.layers.0.input_layernorm" ? 49 : 40}));
  };

  std::vector<int16_t> emb;  // lm_head codes; the embedding rows are the same as residual codes
  std::vector<int64_t> emb64;
  std::vector<float> emb_s;
  for (int64_t i = 0; i < s.v * s.c; ++i) emb.push_back(static_cast<int16_t>(uni(-32767, 32767)));
  for (const int16_t e : emb) emb64.push_back(int64_t{e} * 4096);
  for (int64_t i = 0; i < s.v; ++i) emb_s.push_back(0.0001f);
  add("model.embed_tokens.weight_q", raw_tensor<int64_t>("I64", {s.v, s.c}, emb64));
  std::vector<int64_t> cs, sn;  // Q62
  for (int64_t pos = 0; pos < s.p; ++pos) {
    for (int64_t i = 0; i < s.d / 2; ++i) {
      const double th = static_cast<double>(pos) / std::pow(10000.0, 2.0 * i / s.d);
      cs.push_back(std::llround(std::ldexp(std::cos(th), 62)));
      sn.push_back(std::llround(std::ldexp(std::sin(th), 62)));
    }
  }
  add("rope.cos", raw_tensor<int64_t>("I64", {s.p, s.d / 2}, cs));
  add("rope.sin", raw_tensor<int64_t>("I64", {s.p, s.d / 2}, sn));
  {
    std::vector<int64_t> gm;
    std::vector<int32_t> gn;
    for (int64_t i = 0; i < s.c; ++i) {
      gm.push_back(mult());
      gn.push_back(16 + 31);
    }
    add("model.norm.gain_multiplier", raw_tensor<int64_t>("I64", {s.c}, gm));
    add("model.norm.gain_shift", raw_tensor<int32_t>("I32", {s.c}, gn));
    add("model.norm.eps_term", raw_tensor<int64_t>("I64", {1}, {int64_t{5}}));
    add("model.norm.eps_shift", raw_tensor<int32_t>("I32", {1}, {0}));
  }
  add("lm_head.weight_q", raw_tensor<int16_t>("I16", {s.v, s.c}, emb));
  add("lm_head.weight_scale", raw_tensor<float>("F32", {s.v}, emb_s));
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    norm(pre + "input_layernorm");
    norm(pre + "post_attention_layernorm");
    site(pre + "input_layernorm.input", 16);
    site(pre + "input_layernorm.output", 8);
    site(pre + "post_attention_layernorm.input", 16);
    site(pre + "post_attention_layernorm.output", 8);
    linear(pre + "self_attn.q_proj", s.h * s.d, s.c, 36, false);
    linear(pre + "self_attn.k_proj", s.kv * s.d, s.c, 36, false);
    linear(pre + "self_attn.v_proj", s.kv * s.d, s.c, 36, false);
    linear(pre + "self_attn.o_proj", s.c, s.h * s.d, 28, false);
    linear(pre + "mlp.w1", s.f, s.c, 36, false);
    linear(pre + "mlp.w3", s.f, s.c, 36, false);
    linear(pre + "mlp.w2", s.c, s.f, 34, s.pack_w2);
    for (const char* n : {"self_attn.q_proj.output", "self_attn.k_proj.output",
                          "self_attn.v_proj.output", "self_attn.qk_bmm.input",
                          "self_attn.qk_bmm.input2", "self_attn.pv_bmm.input2",
                          "mlp.w1.output", "mlp.w3.output", "mlp.act_fn.input2",
                          "mlp.act_fn.output", "mlp.w2.input"}) {
      site(pre + n, 8);
    }
    site(pre + "self_attn.pv_bmm.output", 16);  // o_proj gets a 16-bit input: hi/lo GEMMs
    const int qk_bits = site(pre + "self_attn.qk_bmm.output", 12);
    site(pre + "self_attn.pv_bmm.input", 16);
    site(pre + "self_attn.o_proj.output", 16);
    site(pre + "mlp.w2.output", 16);
    add_mult(pre + "self_attn.rope_q", 45 + 32);  // Q62 tables: 32 bits more than Q30
    add_mult(pre + "self_attn.rope_k", 45 + 32);
    add_mult(pre + "self_attn.v_requant", 31);
    add_mult(pre + "self_attn.qk_bmm", 40);
    add_mult(pre + "self_attn.softmax", 15);  // ~ 65535: probabilities to 16-bit codes
    add_mult(pre + "self_attn.pv_bmm", 47);
    add_mult(pre + "resid_add_1", 22);
    add_mult(pre + "mlp.act_fn", 38);
    add_mult(pre + "mlp.mul", 38);
    add_mult(pre + "resid_add_2", 22);
    std::vector<int64_t> exp_lut;
    std::vector<int32_t> sig_lut;
    for (int64_t i = 0; i < (int64_t{1} << qk_bits); ++i)
      exp_lut.push_back(std::llround(std::ldexp(std::exp(-0.01 * i), kFixtureExpBits)));
    for (int64_t u = 0; u < 256; ++u) {
      sig_lut.push_back(static_cast<int32_t>(
          std::lround(255.0 / (1.0 + std::exp(-0.05 * static_cast<double>(u - 128))))));
    }
    add(pre + "self_attn.softmax.exp_lut", raw_tensor<int64_t>("I64", {1 << qk_bits}, exp_lut));
    add(pre + "mlp.act_fn.sigmoid_lut", raw_tensor<int32_t>("I32", {256}, sig_lut));
  }

  nlohmann::json manifest = {
      {"format", "mobilequant-int"},
      {"version", 6},
      {"model",
       {{"architecture", "llama"}, {"hidden_size", s.c}, {"intermediate_size", s.f},
        {"num_hidden_layers", s.layers}, {"num_attention_heads", s.h},
        {"num_key_value_heads", s.kv}, {"head_dim", s.d}, {"vocab_size", s.v},
        {"max_positions", s.p}, {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"},
        {"tie_word_embeddings", s.tied}}},
      {"preset", "w8a8"},
      {"residual", {{"bits", 64}, {"scale", 1e-6}, {"bound", 1073.741824}, {"final_norm_shift", 1}}},
      {"softmax", {{"exp_bits", kFixtureExpBits}}},
      {"final_norm_output", {{"bits", 16}, {"scale", 0.0005}, {"zero_point", 0}}},
      {"activations", acts},
      {"weights", weights},
      {"tensors", nlohmann::json::object()}};
  std::ofstream(dir / "manifest.json") << manifest.dump(2);
  write_safetensors((dir / "model.safetensors").string(), ts);
}

}  // namespace mq::test
