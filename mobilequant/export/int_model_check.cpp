// mobilequant/export/int_model_check.cpp
// The linter's rules for the integer model (int_model.h: check_int_model_files).
#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/export/export_check.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/export/export_manifest.h"
#include "mobilequant/export/int_model.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/quant/primitives.h"

namespace mq {

namespace {

using json = nlohmann::json;

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class IntChecker {
 public:
  IntChecker(std::string dir, const ExportManifest& m, const TensorMap* hf,
             std::vector<CheckFinding>& out)
      : dir_(std::move(dir)), m_(m), hf_(hf), out_(out) {}

  void run() {
    if (!load()) return;
    for (int64_t l = 0; l < m_.num_layers; ++l) check_block(l);
    check_model_level();
  }

 private:
  void add(CheckRule rule, const std::string& file, const std::string& key, const std::string& msg,
           const std::string& expected = "", const std::string& actual = "") {
    out_.push_back({rule, file, key, msg, expected, actual});
  }

  bool load() {
    try {
      manifest_ = json::parse(read_file_bytes(dir_ + "/" + mrel_));
    } catch (const std::exception& e) {
      add(CheckRule::kJson, mrel_, "", std::string("not valid JSON (truncated or edited?): ") +
          e.what());
      return false;
    }
    if (!manifest_.is_object() || manifest_.value("format", "") != kIntFormatName ||
        manifest_.value("version", int64_t{0}) != kIntFormatVersion) {
      add(CheckRule::kSchema, mrel_, "format", "not an integer model manifest of this version",
          std::string(kIntFormatName) + " v" + std::to_string(kIntFormatVersion),
          manifest_.is_object() ? manifest_.value("format", std::string("none")) : "not an object");
      return false;
    }
    for (const char* key : {"model", "residual", "softmax", "final_norm_output", "activations"}) {
      if (!manifest_.contains(key) || !manifest_[key].is_object()) {
        add(CheckRule::kSchema, mrel_, key, "missing or not an object");
        return false;
      }
    }
    const json& model = manifest_["model"];
    for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads", "head_dim",
                            "vocab_size", "max_positions"}) {
      if (!model.contains(key) || !model[key].is_number_integer()) {
        add(CheckRule::kSchema, mrel_, std::string("model.") + key, "missing or not an integer");
        return false;
      }
    }
    C_ = model["hidden_size"].get<int64_t>();
    F_ = model["intermediate_size"].get<int64_t>();
    H_ = model["num_attention_heads"].get<int64_t>();
    KV_ = model["num_key_value_heads"].get<int64_t>();
    D_ = model["head_dim"].get<int64_t>();
    V_ = model["vocab_size"].get<int64_t>();
    P_ = model["max_positions"].get<int64_t>();
    tied_ = model.value("tie_word_embeddings", false);
    if (model["num_hidden_layers"].get<int64_t>() != m_.num_layers)
      add(CheckRule::kCrossFile, mrel_, "model.num_hidden_layers", "differs from export.json",
          std::to_string(m_.num_layers), model["num_hidden_layers"].dump());
    s_r_ = manifest_["residual"].value("scale", 0.0);
    if (!(std::isfinite(s_r_) && s_r_ > 0))
      add(CheckRule::kScale, mrel_, "residual.scale", "must be finite and positive", "> 0",
          num(s_r_));
    if (manifest_["residual"].value("bits", int64_t{0}) != 64)
      add(CheckRule::kSchema, mrel_, "residual.bits", "the residual is int64", "64",
          manifest_["residual"].value("bits", json()).dump());
    final_norm_shift_ = manifest_["residual"].value("final_norm_shift", -1);
    if (final_norm_shift_ < 1 || final_norm_shift_ > 62) {
      add(CheckRule::kSchema, mrel_, "residual.final_norm_shift", "missing or out of range",
          "[1, 62]", std::to_string(final_norm_shift_));
      final_norm_shift_ = 0;
    }
    exp_bits_ = manifest_["softmax"].value("exp_bits", -1);
    if (P_ < 1 || P_ > (int64_t{1} << 32) || exp_bits_ != exp_lut_bits(P_)) {
      add(CheckRule::kSchema, mrel_, "softmax.exp_bits",
          "not the fraction bits of the exponential table for model.max_positions",
          P_ >= 1 && P_ <= (int64_t{1} << 32) ? std::to_string(exp_lut_bits(P_)) : "none",
          manifest_["softmax"].value("exp_bits", json()).dump());
      exp_bits_ = -1;
    }
    try {
      t_ = read_safetensors(dir_ + "/" + trel_, /*keep_dtype=*/true);
    } catch (const Error& e) {
      add(CheckRule::kSchema, trel_, "", std::string("not a valid safetensors file: ") + e.what());
      return false;
    }
    return true;
  }

  /// The tensor `name` if it has `dtype` and `shape`; else a finding and an undefined tensor.
  torch::Tensor get(const std::string& name, torch::ScalarType dtype,
                    const std::vector<int64_t>& shape) {
    const auto it = t_.find(name);
    if (it == t_.end()) {
      add(CheckRule::kSchema, trel_, name, "tensor missing", "a tensor", "none");
      return {};
    }
    if (it->second.scalar_type() != dtype) {
      add(CheckRule::kSchema, trel_, name, "wrong dtype", c10::toString(dtype),
          c10::toString(it->second.scalar_type()));
      return {};
    }
    if (it->second.sizes().vec() != shape) {
      add(CheckRule::kShape, trel_, name, "wrong shape", shape_str(shape),
          shape_str(it->second.sizes().vec()));
      return {};
    }
    return it->second;
  }

  /// The activation encoding of a site from the manifest (scale 0 when missing or bad).
  double act_scale(int64_t layer, ActSite site) {
    const std::string name = qualified_site_name(layer, site);
    const json& acts = manifest_["activations"];
    const QuantSpec& spec = m_.quant.act(site);
    if (!acts.contains(name) || !acts[name].is_object()) {
      add(CheckRule::kCoverage, mrel_, "activations." + name, "quantized site has no encoding",
          "an entry", "none");
      return 0.0;
    }
    const json& e = acts[name];
    const double s = e.value("scale", 0.0);
    if (!(std::isfinite(s) && s > 0))
      add(CheckRule::kScale, mrel_, "activations." + name + ".scale",
          "must be finite and positive", "> 0", e.contains("scale") ? e["scale"].dump() : "none");
    if (e.value("bits", int64_t{0}) != spec.bits)
      add(CheckRule::kBitwidth, mrel_, "activations." + name + ".bits",
          "differs from the site's spec", std::to_string(spec.bits),
          e.contains("bits") ? e["bits"].dump() : "none");
    if (!e.contains("zero_point") || !e["zero_point"].is_number_integer()) {
      add(CheckRule::kOffset, mrel_, "activations." + name + ".zero_point",
          "zero_point must be an integer", "an integer",
          e.contains("zero_point") ? e["zero_point"].dump() : "none");
    } else {
      const int64_t z = e["zero_point"].get<int64_t>();
      if (z < -2147483647 || z > 2147483647)
        add(CheckRule::kOffset, mrel_, "activations." + name + ".zero_point",
            "zero_point does not fit int32", "|z| < 2^31", std::to_string(z));
    }
    return std::isfinite(s) && s > 0 ? s : 0.0;
  }

  /// Checks that the softmax's exponential table `lut` (I64) is exp_lut(step, size,
  /// softmax.exp_bits), entry for entry.
  void check_exp_lut(const std::string& name, const torch::Tensor& lut, double step) {
    const std::vector<int64_t> want = exp_lut(step, lut.numel(), exp_bits_);
    const int64_t* got = lut.data_ptr<int64_t>();
    for (size_t k = 0; k < want.size(); ++k) {
      if (got[k] != want[k]) {
        add(CheckRule::kRequant, trel_, name + "[" + std::to_string(k) + "]",
            "does not reproduce round(2^F exp(-k s(qk_bmm.output) / sqrt(D))), F = " +
                std::to_string(exp_bits_),
            std::to_string(want[k]), std::to_string(got[k]));
        return;
      }
    }
  }

  /// Checks that (multiplier, shift) tensors named `base`multiplier/shift (I64, I32) of `n`
  /// entries reproduce `want` (one real value per entry, in long double) to 2^-61 relative: 62
  /// correct bits.
  void check_fixed(const std::string& base, const std::vector<long double>& want,
                   int32_t min_shift = kMinShift) {
    const int64_t n = static_cast<int64_t>(want.size());
    const torch::Tensor mt = get(base + "multiplier", torch::kInt64, {n});
    const torch::Tensor st = get(base + "shift", torch::kInt32, {n});
    if (!mt.defined() || !st.defined()) return;
    const int64_t* mp = mt.data_ptr<int64_t>();
    const int32_t* sp = st.data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      const std::string key = base + "multiplier" + (n > 1 ? "[" + std::to_string(i) + "]" : "");
      if (sp[i] < min_shift || sp[i] > kMaxShift || !multiplier_in_range(mp[i])) {
        add(CheckRule::kRequant, trel_, key, "multiplier or shift out of range",
            "|M| in [2^62, 2^63) or 0, shift in [" + std::to_string(min_shift) + ", " +
                std::to_string(kMaxShift) + "]",
            std::to_string(mp[i]) + ", " + std::to_string(sp[i]));
        return;
      }
      const long double got = std::ldexp(static_cast<long double>(mp[i]), -sp[i]);
      const long double w = want[static_cast<size_t>(i)];
      if (!std::isfinite(w)) return;  // an encoding above is already reported
      if (std::abs(got - w) > std::ldexp(std::abs(w), -61) + std::ldexp(1.0L, -95)) {
        add(CheckRule::kRequant, trel_, key, "does not reproduce its real multiplier",
            num(static_cast<double>(w)), num(static_cast<double>(got)));
        return;
      }
    }
  }

  /// Checks `{prefix}.eps_term` and `.eps_shift` against e = eps * C / s_in^2 (squared input
  /// codes): the shift in [0, 48], the term in [0, 2^62), the shift as large as the term
  /// allows (48, or a term >= 2^61), and term * 2^-shift within one unit of the last place
  /// (2^-shift) of e.
  void check_eps_term(const std::string& prefix, double s_in) {
    const torch::Tensor et = get(prefix + ".eps_term", torch::kInt64, {1});
    const torch::Tensor st = get(prefix + ".eps_shift", torch::kInt32, {1});
    if (!et.defined() || !st.defined()) return;
    const int64_t term = et.item<int64_t>();
    const int32_t shift = st.item<int32_t>();
    if (term < 0 || term >= (int64_t{1} << 62) || shift < 0 || shift > kEpsTermMaxShift) {
      add(CheckRule::kRequant, trel_, prefix + ".eps_term", "eps term or shift out of range",
          "term in [0, 2^62), shift in [0, 48]", std::to_string(term) + ", " + std::to_string(shift));
      return;
    }
    if (shift < kEpsTermMaxShift && term < (int64_t{1} << 61)) {
      add(CheckRule::kRequant, trel_, prefix + ".eps_term",
          "keeps fewer fraction bits than it can (version 1 rounded it to an integer)",
          "eps_shift 48, or a term >= 2^61", std::to_string(term) + ", " + std::to_string(shift));
      return;
    }
    const double eps = manifest_["model"].value("rms_norm_eps", -1.0);
    const double want = eps * static_cast<double>(C_) / (s_in * s_in);
    if (!(std::isfinite(want) && want >= 0)) return;  // a bad eps or scale is reported elsewhere
    const double got = std::ldexp(static_cast<double>(term), -shift);
    if (std::abs(got - want) > std::ldexp(1.0, -shift) + std::ldexp(want, -50)) {
      add(CheckRule::kRequant, trel_, prefix + ".eps_term",
          "does not reproduce eps * C / s_in^2 (times 2^-eps_shift)", num(want), num(got));
    }
  }

  /// Checks codes [.., K] against their bits.
  void check_codes(const std::string& name, const torch::Tensor& codes, int64_t bits) {
    const int64_t hi = codes.to(torch::kInt64).max().item<int64_t>();
    const int64_t lo = codes.to(torch::kInt64).min().item<int64_t>();
    if (lo < 0 || hi > (int64_t{1} << bits) - 1)
      add(CheckRule::kBitwidth, trel_, name, "codes do not fit " + std::to_string(bits) + " bits",
          "[0, " + std::to_string((int64_t{1} << bits) - 1) + "]",
          "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }

  /// Weight codes [N, K] (unpacked) of a site, with scale [E] and zero [E]; checks them and,
  /// with the hf model, that they dequantize to exactly the simulated weight.
  void check_weight(int64_t l, WeightSite ws) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    const std::string name = pre + to_string(ws);
    const QuantSpec& spec = m_.quant.weight(ws);
    const bool norm = is_norm(ws);
    const auto w_it = m_.weights.find(name + ".weight");
    if (w_it == m_.weights.end()) return;  // reported by the main linter
    const std::vector<int64_t> shape = w_it->second.shape;
    const int64_t n = shape[0], k = norm ? 1 : shape[1];
    const int64_t entries = (!norm && spec.granularity == Granularity::kPerChannel) ? n : 1;
    torch::Tensor codes;  // [N, K] (linear) or [C] (norm), int64
    if (norm) {
      codes = get(name + ".weight_q", spec.bits <= 8 ? torch::kUInt8 : torch::kUInt16, {n});
    } else if (spec.bits <= 4) {
      const torch::Tensor packed = get(name + ".weight_q", torch::kUInt8, {n, k / 2});
      if (packed.defined()) {
        const torch::Tensor p = packed.to(torch::kInt64);
        codes = torch::stack({p.remainder(16), p.div(16, "floor")}, 2).reshape({n, k});
      }
    } else {
      codes = get(name + ".weight_q", torch::kUInt8, {n, k});
    }
    const torch::Tensor sc = get(name + ".weight_scale", torch::kFloat32, {entries});
    const torch::Tensor zp = get(name + ".weight_zero_point", torch::kInt32, {entries});
    if (!codes.defined() || !sc.defined() || !zp.defined()) return;
    codes = codes.to(torch::kInt64);
    check_codes(name + ".weight_q", codes, spec.bits);
    // The multipliers: linear requant, or the norm's input and gains.
    if (norm) {
      const ActSite in = ws == WeightSite::kInputNorm ? ActSite::kInputNormIn : ActSite::kPostNormIn;
      const ActSite out = ws == WeightSite::kInputNorm ? ActSite::kInputNormOut : ActSite::kPostNormOut;
      const double s_in = act_scale(l, in), s_out = act_scale(l, out);
      const torch::Tensor w_hat =
          (codes - zp.to(torch::kInt64)).to(torch::kFloat64) * sc.to(torch::kFloat64);  // [C]
      std::vector<long double> gains(static_cast<size_t>(n));
      for (int64_t c = 0; c < n; ++c)
        gains[static_cast<size_t>(c)] =
            w_hat[c].item<double>() * std::sqrt(static_cast<long double>(n)) / s_out;
      check_fixed(name + ".input_", {static_cast<long double>(s_r_) / s_in});
      check_fixed(name + ".gain_", gains);
      check_eps_term(name, s_in);
    } else {
      const auto [in, out] = int_linear_io(ws);
      const double s_in = act_scale(l, in), s_out = act_scale(l, out);
      std::vector<long double> m;
      for (int64_t i = 0; i < entries; ++i)
        m.push_back(static_cast<long double>(s_in) * sc[i].item<float>() / s_out);
      check_fixed(name + ".requant_", m);
    }
    if (hf_ == nullptr) return;
    const auto h_it = hf_->find(w_it->second.hf_name);
    if (h_it == hf_->end() || h_it->second.sizes().vec() != shape) return;  // main linter
    // The simulated weight: the weight quantizer of the spec on the exported float weight.
    torch::NoGradGuard no_grad;
    const torch::Tensor w = h_it->second.to(torch::kFloat32);  // [N, K] or [C]
    WeightFakeQuantizer wq(WeightFakeQuantizerOptions(spec, shape, name + ".weight"));
    const QParams p = wq->qparams(w);
    const torch::Tensor sim = wq->forward(w);  // fake-quantized
    const torch::Tensor z64 = zp.to(torch::kInt64);
    const torch::Tensor bz = norm || entries == 1 ? z64.reshape({1}) : z64.reshape({n, 1});
    const torch::Tensor bs = norm || entries == 1 ? sc.reshape({1}) : sc.reshape({n, 1});
    const torch::Tensor deq = (codes - bz).to(torch::kFloat32) * bs;  // [N, K] or [C]
    if (!torch::equal(deq, sim)) {
      const torch::Tensor diff = (deq - sim).abs();
      const int64_t at = diff.flatten().argmax().item<int64_t>();
      add(CheckRule::kWeights, trel_, name + ".weight_q",
          "integer weights do not dequantize to the simulated weights of " +
              w_it->second.hf_name + " (first mismatch at flat index " + std::to_string(at) + ")",
          num(sim.flatten()[at].item<double>()), num(deq.flatten()[at].item<double>()));
      return;
    }
    const torch::Tensor ps = p.scale.flatten().to(torch::kFloat32);
    if (!torch::equal(ps, sc))
      add(CheckRule::kWeights, trel_, name + ".weight_scale",
          "differs from the scale the exported weight gives", num(ps[0].item<double>()),
          num(sc[0].item<double>()));
  }

  void check_block(int64_t l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    for (const WeightSite ws : EnumValues<WeightSite>::values()) check_weight(l, ws);
    std::map<ActSite, double> s;
    bool ok = true;
    for (const ActSite a : EnumValues<ActSite>::values()) {
      if (!is_block_site(a) || !m_.quant.act(a).enabled) continue;
      s[a] = act_scale(l, a);
      ok = ok && s[a] > 0;
    }
    if (ok && s_r_ > 0) {
      for (const IntOpMultiplier& op :
           int_block_op_multipliers(
               [&](ActSite a) -> long double { return s.count(a) ? s[a] : 1.0; }, s_r_))
        check_fixed(pre + op.name + ".", {op.value}, op.min_shift);
    }
    const int64_t sb = m_.quant.act(ActSite::kQkBmmOut).bits;
    const torch::Tensor lut = get(pre + "self_attn.softmax.exp_lut", torch::kInt64, {int64_t{1} << sb});
    if (lut.defined() && exp_bits_ >= 0 && s.count(ActSite::kQkBmmOut) && s[ActSite::kQkBmmOut] > 0)
      check_exp_lut(pre + "self_attn.softmax.exp_lut", lut,
                    s[ActSite::kQkBmmOut] / std::sqrt(static_cast<double>(D_)));
    const int64_t gb = m_.quant.act(ActSite::kGateOut).bits;
    const torch::Tensor sig = get(pre + "mlp.act_fn.sigmoid_lut", torch::kInt32, {int64_t{1} << gb});
    if (sig.defined())
      check_codes(pre + "mlp.act_fn.sigmoid_lut", sig, m_.quant.act(ActSite::kActIn2).bits);
  }

  void check_model_level() {
    const torch::Tensor eq = get("model.embed_tokens.weight_q", torch::kInt64, {V_, C_});
    if (eq.defined() && eq.numel() > 0 && eq.abs().max().item<int64_t>() > (int64_t{1} << 61))
      add(CheckRule::kSchema, trel_, "model.embed_tokens.weight_q",
          "residual codes beyond the residual's headroom", "|code| <= 2^61",
          std::to_string(eq.abs().max().item<int64_t>()));
    // The codes are the exported embedding over s_r (a power of two), rounded.
    if (eq.defined() && hf_ != nullptr && s_r_ > 0) {
      const auto h_it = hf_->find("model.embed_tokens.weight");
      if (h_it != hf_->end() && h_it->second.sizes() == eq.sizes()) {
        const torch::Tensor want =
            torch::round(h_it->second.to(torch::kFloat64) / s_r_).to(torch::kInt64);  // [V, C]
        if (!torch::equal(want, eq))
          add(CheckRule::kWeights, trel_, "model.embed_tokens.weight_q",
              "differs from the exported embedding", "round(E / s_r)",
              std::to_string(want.ne(eq).sum().item<int64_t>()) + " code(s) differ");
      }
    }
    get("rope.cos", torch::kInt64, {P_, D_ / 2});
    get("rope.sin", torch::kInt64, {P_, D_ / 2});
    get("model.norm.gain_multiplier", torch::kInt64, {C_});
    get("model.norm.gain_shift", torch::kInt32, {C_});
    if (s_r_ > 0) check_eps_term("model.norm", std::ldexp(s_r_, final_norm_shift_));
    get("lm_head.weight_q", torch::kInt16, {V_, C_});
    get("lm_head.weight_scale", torch::kFloat32, {V_});
    (void)tied_;
    (void)F_;
    (void)H_;
    (void)KV_;
  }

 private:
  std::string dir_;
  const ExportManifest& m_;
  const TensorMap* hf_;  // the export's hf/ tensors, or null
  std::vector<CheckFinding>& out_;
  const std::string mrel_ = std::string(kIntModelDir) + "/" + kIntManifestFile;
  const std::string trel_ = std::string(kIntModelDir) + "/" + kIntTensorsFile;
  json manifest_;
  TensorMap t_;
  int64_t C_ = 0, F_ = 0, H_ = 0, KV_ = 0, D_ = 0, V_ = 0, P_ = 0;
  bool tied_ = false;
  double s_r_ = 0.0;
  int final_norm_shift_ = 0;
  int exp_bits_ = -1;  // softmax.exp_bits, -1 when missing or wrong
};

}  // namespace

void check_int_model_files(const std::string& export_dir, const ExportManifest& m,
                           const TensorMap* hf, std::vector<CheckFinding>& findings) {
  IntChecker(export_dir, m, hf, findings).run();
}

}  // namespace mq
