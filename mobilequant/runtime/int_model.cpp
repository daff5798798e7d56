// mobilequant/runtime/int_model.cpp
#include "mobilequant/runtime/int_model.h"

#include <fstream>
#include <tuple>
#include <utility>
#include <nlohmann/json.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/safetensors_file.h"

namespace mq::rt {
namespace {

using nlohmann::json;

/// Reads manifest.json; throws naming the file when it is missing or not JSON.
json read_manifest(const std::string& path) {
  std::ifstream in(path);
  MQ_CHECK(in.good(), "integer model: cannot open '", path, "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw make_error("integer model '", path, "': not JSON: ", e.what());
  }
}

/// manifest[key] as an object; throws naming the manifest and the key.
const json& object_at(const json& j, const std::string& key, const std::string& path) {
  MQ_CHECK(j.contains(key) && j.at(key).is_object(), "integer model '", path, "': missing object '",
           key, "'");
  return j.at(key);
}

template <typename T>
T value_at(const json& j, const std::string& key, const std::string& where) {
  MQ_CHECK(j.contains(key), "integer model ", where, ": missing key '", key, "'");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw make_error("integer model ", where, ": key '", key, "': ", e.what());
  }
}

/// Loads the tensors of one safetensors file with the checks the runtime needs.
class Loader {
 public:
  Loader(const SafetensorsFile& f, const std::string& manifest_path, const json& manifest)
      : f_(f), manifest_path_(manifest_path), manifest_(manifest) {}

  template <typename T>
  std::vector<T> read(const std::string& name, std::vector<DType> dtypes,
                      const std::vector<int64_t>& shape) const {
    return f_.read<T>(name, dtypes, shape);
  }

  /// The first dimension of `name` when it is [n_full] or [1] (per channel or per tensor).
  int64_t per_channel_len(const std::string& name, int64_t n_full) const {
    const TensorInfo& ti = f_.info(name);
    MQ_CHECK(ti.shape.size() == 1 && (ti.shape[0] == n_full || ti.shape[0] == 1),
             "safetensors '", f_.path(), "': tensor '", name, "' has shape ",
             shape_string(ti.shape), ", expected [", n_full, "] or [1]");
    return ti.shape[0];
  }

  /// An I64 [1] multiplier and I32 [1] shift `prefix.mult_key`, `prefix.shift_key`,
  /// range-checked.
  Multiplier multiplier(const std::string& prefix, const std::string& mult_key = "multiplier",
                        const std::string& shift_key = "shift",
                        int32_t min_shift = kMinShift) const {
    Multiplier m;
    m.m = read<int64_t>(prefix + "." + mult_key, {DType::kI64}, {1})[0];
    m.shift = read<int32_t>(prefix + "." + shift_key, {DType::kI32}, {1})[0];
    check_multiplier(prefix + "." + mult_key, m.m);
    check_shift(prefix + "." + shift_key, m.shift, min_shift);
    return m;
  }

  /// |M| in [2^62, 2^63) or 0 (a 62-bit fixed-point multiplier).
  void check_multiplier(const std::string& name, int64_t m) const {
    MQ_CHECK(multiplier_in_range(m), "safetensors '",
             f_.path(), "': tensor '", name, "': multiplier ", m,
             " outside the 62-bit range |M| in [2^62, 2^63) (or 0)");
  }

  void check_shift(const std::string& name, int32_t shift, int32_t min_shift = kMinShift) const {
    MQ_CHECK(shift >= min_shift && shift <= kMaxShift, "safetensors '", f_.path(), "': tensor '",
             name, "': shift ", shift, " outside the supported [", min_shift, ", ", kMaxShift, "]");
  }

  /// The encoding of activation site `site` from the manifest.
  ActQuant act(const std::string& site) const {
    const json& acts = object_at(manifest_, "activations", manifest_path_);
    MQ_CHECK(acts.contains(site), "integer model '", manifest_path_,
             "': activations lacks site '", site, "'");
    const json& a = acts.at(site);
    const std::string where = "'" + manifest_path_ + "' site '" + site + "'";
    ActQuant q;
    q.bits = value_at<int>(a, "bits", where);
    q.zero_point = value_at<int32_t>(a, "zero_point", where);
    q.scale = value_at<double>(a, "scale", where);
    MQ_CHECK(q.bits >= 1 && q.bits <= 16, "integer model ", where, ": bits ", q.bits,
             " outside [1, 16]");
    return q;
  }

  /// A linear site `{prefix}` with N outputs and K inputs.
  IntLinearWeights linear(const std::string& prefix, int64_t n, int64_t k) const {
    IntLinearWeights w;
    w.out_features = n;
    w.in_features = k;
    MQ_CHECK(k * 255 * 255 < (int64_t{1} << 31), "integer model: ", prefix, " has K = ", k,
             " inputs; the int32 GEMM sums allow at most 33025");
    bool packed = false;
    w.bits = 8;
    const json& weights = manifest_.contains("weights") ? manifest_.at("weights") : json::object();
    const std::string site = prefix + ".weight";
    if (weights.contains(site)) {
      const std::string where = "'" + manifest_path_ + "' weight '" + site + "'";
      w.bits = value_at<int>(weights.at(site), "bits", where);
      packed = weights.at(site).value("packed", false);
      MQ_CHECK(w.bits >= 1 && w.bits <= 8, "integer model ", where, ": bits ", w.bits,
               " outside [1, 8]");
      MQ_CHECK(!packed || w.bits <= 4, "integer model ", where, ": packed with ", w.bits,
               " bits, expected <= 4");
    }
    const std::string q_name = prefix + ".weight_q";
    if (packed) {
      auto raw = read<uint8_t>(q_name, {DType::kU8}, {n, (k + 1) / 2});
      w.codes = unpack_4bit(raw, n, k);
    } else {
      w.codes = read<uint8_t>(q_name, {DType::kU8}, {n, k});
    }
    const int32_t wmax = static_cast<int32_t>((1 << w.bits) - 1);
    for (size_t i = 0; i < w.codes.size(); ++i) {
      MQ_CHECK(w.codes[i] <= wmax, "safetensors '", f_.path(), "': tensor '", q_name,
               "': code ", int(w.codes[i]), " at ", i, " exceeds ", wmax, " (", w.bits,
               " bits)");
    }
    w.zero_point = expand<int32_t>(prefix + ".weight_zero_point", n, DType::kI32);
    expand_checked_float(prefix + ".weight_scale", n);
    w.multiplier = expand<int64_t>(prefix + ".requant_multiplier", n, DType::kI64);
    w.shift = expand<int32_t>(prefix + ".requant_shift", n, DType::kI32);
    for (int64_t m : w.multiplier) check_multiplier(prefix + ".requant_multiplier", m);
    for (int32_t s : w.shift) check_shift(prefix + ".requant_shift", s);
    w.compute_row_sums();
    w.pack_for_cpu();
    return w;
  }

  /// A [n] or [1] tensor of `dtype`, expanded to [n].
  template <class T>
  std::vector<T> expand(const std::string& name, int64_t n, DType dtype) const {
    const int64_t len = per_channel_len(name, n);
    auto v = read<T>(name, {dtype}, {len});
    if (len == 1) v.assign(static_cast<size_t>(n), v[0]);
    return v;
  }

  /// Checks an F32 [n] or [1] tensor (read, not kept: the kernels use the multipliers).
  void expand_checked_float(const std::string& name, int64_t n) const {
    const int64_t len = per_channel_len(name, n);
    (void)read<float>(name, {DType::kF32}, {len});
  }

  /// A block norm `{prefix}`.
  IntNorm norm(const std::string& prefix, int64_t c) const {
    IntNorm nm;
    nm.weight_q = read<int32_t>(prefix + ".weight_q", {DType::kU16, DType::kU8}, {c});
    (void)read<float>(prefix + ".weight_scale", {DType::kF32}, {1});
    (void)read<int32_t>(prefix + ".weight_zero_point", {DType::kI32}, {1});
    nm.input = multiplier(prefix, "input_multiplier", "input_shift");
    std::tie(nm.gain_m, nm.gain_n) = gains(prefix, c);
    std::tie(nm.eps_term, nm.eps_shift) = eps_term(prefix);
    nm.in = act(prefix + ".input");
    nm.out = act(prefix + ".output");
    return nm;
  }

  /// The RMSNorm gains `{prefix}.gain_multiplier` (I64 [C]) and `.gain_shift` (I32 [C]).
  std::pair<std::vector<int64_t>, std::vector<int32_t>> gains(const std::string& prefix,
                                                              int64_t c) const {
    auto gm = read<int64_t>(prefix + ".gain_multiplier", {DType::kI64}, {c});
    auto gn = read<int32_t>(prefix + ".gain_shift", {DType::kI32}, {c});
    for (int64_t m : gm) check_multiplier(prefix + ".gain_multiplier", m);
    for (int32_t s : gn) check_shift(prefix + ".gain_shift", s);
    return {gm, gn};
  }

  /// The eps term `{prefix}.eps_term` (>= 0, below 2^62) and its `{prefix}.eps_shift` (fraction
  /// bits in [0, 48]).
  std::pair<int64_t, int32_t> eps_term(const std::string& prefix) const {
    const int64_t e = read<int64_t>(prefix + ".eps_term", {DType::kI64}, {1})[0];
    MQ_CHECK(e >= 0 && e < (int64_t{1} << 62), "safetensors '", f_.path(), "': tensor '", prefix,
             ".eps_term' is ", e, ", expected in [0, 2^62)");
    const int32_t f = read<int32_t>(prefix + ".eps_shift", {DType::kI32}, {1})[0];
    MQ_CHECK(f >= 0 && f <= 48, "safetensors '", f_.path(), "': tensor '", prefix,
             ".eps_shift' is ", f, ", expected in [0, 48]");
    return {e, f};
  }

  const SafetensorsFile& file() const { return f_; }

 private:
  const SafetensorsFile& f_;
  std::string manifest_path_;
  const json& manifest_;
};

/// Checks that every LUT entry is a code of `q` (sigmoid) or in [0, 2^exp_bits] (exp).
template <class T>
void check_range(const std::vector<T>& v, int64_t lo, int64_t hi, const std::string& file,
                 const std::string& name) {
  for (size_t i = 0; i < v.size(); ++i) {
    MQ_CHECK(v[i] >= lo && v[i] <= hi, "safetensors '", file, "': tensor '", name, "': entry ",
             i, " = ", v[i], " outside [", lo, ", ", hi, "]");
  }
}

}  // namespace

IntModel IntModel::load(const std::string& int_dir) {
  const std::string manifest_path = int_dir + "/manifest.json";
  const json manifest = read_manifest(manifest_path);
  const std::string where = "'" + manifest_path + "'";
  const auto format = value_at<std::string>(manifest, "format", where);
  MQ_CHECK(format == "mobilequant-int", "integer model ", where, ": format '", format,
           "', expected 'mobilequant-int'");
  const auto version = value_at<int>(manifest, "version", where);
  MQ_CHECK(version == 6, "integer model ", where, ": version ", version,
           ", expected 6 (version 1 rounded the RMSNorm eps terms to integers, versions 1 and 2 "
           "kept the residual in int32 at a coarse scale, versions 1 to 3 kept 30 bits of the "
           "softmax's exponentials, versions 1 to 4 held 31-bit multipliers and Q30 rotary "
           "tables, versions 1 to 5 rounded embeddings to int32 codes: export the run again)");

  IntModel m;
  const json& mj = object_at(manifest, "model", manifest_path);
  const std::string mwhere = where + " model";
  IntModelConfig& cfg = m.config_;
  const auto arch = value_at<std::string>(mj, "architecture", mwhere);
  MQ_CHECK(arch == "llama", "integer model ", mwhere, ": architecture '", arch,
           "', expected 'llama'");
  cfg.hidden_size = value_at<int64_t>(mj, "hidden_size", mwhere);
  cfg.intermediate_size = value_at<int64_t>(mj, "intermediate_size", mwhere);
  cfg.num_hidden_layers = value_at<int64_t>(mj, "num_hidden_layers", mwhere);
  cfg.num_attention_heads = value_at<int64_t>(mj, "num_attention_heads", mwhere);
  cfg.num_key_value_heads = value_at<int64_t>(mj, "num_key_value_heads", mwhere);
  cfg.head_dim = value_at<int64_t>(mj, "head_dim", mwhere);
  cfg.vocab_size = value_at<int64_t>(mj, "vocab_size", mwhere);
  cfg.max_positions = value_at<int64_t>(mj, "max_positions", mwhere);
  cfg.rms_norm_eps = value_at<double>(mj, "rms_norm_eps", mwhere);
  cfg.tie_word_embeddings = value_at<bool>(mj, "tie_word_embeddings", mwhere);
  MQ_CHECK(cfg.hidden_size > 0 && cfg.intermediate_size > 0 && cfg.num_hidden_layers >= 0 &&
               cfg.num_attention_heads > 0 && cfg.num_key_value_heads > 0 &&
               cfg.head_dim > 0 && cfg.head_dim % 2 == 0 && cfg.vocab_size > 0 &&
               cfg.max_positions > 0,
           "integer model ", mwhere, ": invalid shape (every size must be positive, head_dim even)");
  MQ_CHECK(cfg.num_attention_heads % cfg.num_key_value_heads == 0, "integer model ", mwhere,
           ": num_attention_heads ", cfg.num_attention_heads,
           " is not a multiple of num_key_value_heads ", cfg.num_key_value_heads);
  if (mj.contains("hidden_act")) {
    MQ_CHECK(mj.at("hidden_act") == "silu", "integer model ", mwhere, ": hidden_act ",
             mj.at("hidden_act").dump(), ", expected \"silu\"");
  }
  m.preset_ = manifest.value("preset", std::string());
  const json& residual = object_at(manifest, "residual", manifest_path);
  m.residual_scale = value_at<double>(residual, "scale", where + " residual");
  const auto residual_bits = value_at<int>(residual, "bits", where + " residual");
  MQ_CHECK(residual_bits == 64, "integer model ", where, ": residual bits ", residual_bits,
           ", expected 64");
  m.final_norm_shift = value_at<int>(residual, "final_norm_shift", where + " residual");
  MQ_CHECK(m.final_norm_shift >= 1 && m.final_norm_shift <= 62, "integer model ", where,
           ": residual final_norm_shift ", m.final_norm_shift, ", expected in [1, 62]");
  const int exp_bits = value_at<int>(object_at(manifest, "softmax", manifest_path), "exp_bits",
                                     where + " softmax");
  MQ_CHECK(exp_bits >= 0 && exp_bits <= 62 &&
               cfg.max_positions <= (int64_t{1} << (62 - exp_bits)),
           "integer model ", where, ": softmax exp_bits ", exp_bits, " with max_positions ",
           cfg.max_positions, ": a row's sum of exponentials, max_positions * 2^exp_bits, must "
           "not pass 2^62");
  m.final_norm_scale = value_at<float>(object_at(manifest, "final_norm_output", manifest_path),
                                       "scale", where + " final_norm_output");

  const SafetensorsFile f = SafetensorsFile::open(int_dir + "/model.safetensors");
  const Loader ld(f, manifest_path, manifest);
  const int64_t c = cfg.hidden_size, ff = cfg.intermediate_size, h = cfg.num_attention_heads,
                kv = cfg.num_key_value_heads, d = cfg.head_dim, v = cfg.vocab_size,
                p = cfg.max_positions;

  m.embed_q = ld.read<int64_t>("model.embed_tokens.weight_q", {DType::kI64}, {v, c});
  check_range(m.embed_q, -(int64_t{1} << 61), int64_t{1} << 61, f.path(),
              "model.embed_tokens.weight_q");
  m.rope_cos = ld.read<int64_t>("rope.cos", {DType::kI64}, {p, d / 2});
  m.rope_sin = ld.read<int64_t>("rope.sin", {DType::kI64}, {p, d / 2});
  check_range(m.rope_cos, -(int64_t{1} << 62), int64_t{1} << 62, f.path(), "rope.cos");
  check_range(m.rope_sin, -(int64_t{1} << 62), int64_t{1} << 62, f.path(), "rope.sin");
  std::tie(m.norm_gain_m, m.norm_gain_n) = ld.gains("model.norm", c);
  std::tie(m.norm_eps_term, m.norm_eps_shift) = ld.eps_term("model.norm");
  m.lm_head_q = ld.read<int16_t>("lm_head.weight_q", {DType::kI16}, {v, c});
  m.lm_head_scale = ld.read<float>("lm_head.weight_scale", {DType::kF32}, {v});
  for (size_t i = 0; i < m.lm_head_q.size(); ++i) {
    MQ_CHECK(m.lm_head_q[i] != INT16_MIN, "safetensors '", f.path(),
             "': lm_head codes must be symmetric in [-32767, 32767]; found -32768 at ", i);
  }
  if (vnni_supported()) m.lm_head_packed = VnniPackedI16::pack(m.lm_head_q.data(), v, c);

  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    IntLayer L;
    L.input_layernorm = ld.norm(pre + "input_layernorm", c);
    L.post_attention_layernorm = ld.norm(pre + "post_attention_layernorm", c);
    L.q_proj = ld.linear(pre + "self_attn.q_proj", h * d, c);
    L.k_proj = ld.linear(pre + "self_attn.k_proj", kv * d, c);
    L.v_proj = ld.linear(pre + "self_attn.v_proj", kv * d, c);
    L.o_proj = ld.linear(pre + "self_attn.o_proj", c, h * d);
    L.w1 = ld.linear(pre + "mlp.w1", ff, c);
    L.w3 = ld.linear(pre + "mlp.w3", ff, c);
    L.w2 = ld.linear(pre + "mlp.w2", c, ff);
    L.rope_q = ld.multiplier(pre + "self_attn.rope_q");
    L.rope_k = ld.multiplier(pre + "self_attn.rope_k");
    L.v_requant = ld.multiplier(pre + "self_attn.v_requant");
    L.qk_bmm = ld.multiplier(pre + "self_attn.qk_bmm");
    L.softmax = ld.multiplier(pre + "self_attn.softmax");
    L.pv_bmm = ld.multiplier(pre + "self_attn.pv_bmm");
    L.resid_add_1 = ld.multiplier(pre + "resid_add_1", "multiplier", "shift", kResidualAddMinShift);
    L.act_fn = ld.multiplier(pre + "mlp.act_fn");
    L.mul = ld.multiplier(pre + "mlp.mul");
    L.resid_add_2 = ld.multiplier(pre + "resid_add_2", "multiplier", "shift", kResidualAddMinShift);
    MQ_CHECK(L.softmax.m >= 0 && L.softmax.shift <= 127, "safetensors '", f.path(),
             "': tensor '", pre, "self_attn.softmax.multiplier': (", L.softmax.m, ", ",
             L.softmax.shift, ") must be >= 0 with shift <= 127");
    L.q_out = ld.act(pre + "self_attn.q_proj.output");
    L.k_out = ld.act(pre + "self_attn.k_proj.output");
    L.v_out = ld.act(pre + "self_attn.v_proj.output");
    L.qk_in = ld.act(pre + "self_attn.qk_bmm.input");
    L.qk_in2 = ld.act(pre + "self_attn.qk_bmm.input2");
    L.qk_out = ld.act(pre + "self_attn.qk_bmm.output");
    L.pv_in = ld.act(pre + "self_attn.pv_bmm.input");
    L.pv_in2 = ld.act(pre + "self_attn.pv_bmm.input2");
    L.pv_out = ld.act(pre + "self_attn.pv_bmm.output");
    L.o_out = ld.act(pre + "self_attn.o_proj.output");
    L.w1_out = ld.act(pre + "mlp.w1.output");
    L.w3_out = ld.act(pre + "mlp.w3.output");
    L.act_in2 = ld.act(pre + "mlp.act_fn.input2");
    L.act_out = ld.act(pre + "mlp.act_fn.output");
    L.w2_in = ld.act(pre + "mlp.w2.input");
    L.w2_out = ld.act(pre + "mlp.w2.output");
    const int64_t exp_size = int64_t{1} << L.qk_out.bits;
    L.exp_lut = ld.read<int64_t>(pre + "self_attn.softmax.exp_lut", {DType::kI64}, {exp_size});
    check_range(L.exp_lut, 0, int64_t{1} << exp_bits, f.path(), pre + "self_attn.softmax.exp_lut");
    const int64_t sig_size = int64_t{1} << L.w1_out.bits;
    L.sigmoid_lut = ld.read<int32_t>(pre + "mlp.act_fn.sigmoid_lut", {DType::kI32}, {sig_size});
    check_range(L.sigmoid_lut, 0, L.act_in2.qmax(), f.path(), pre + "mlp.act_fn.sigmoid_lut");
    m.layers_.push_back(std::move(L));
  }
  return m;
}

}  // namespace mq::rt
