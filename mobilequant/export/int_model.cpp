// mobilequant/export/int_model.cpp
#include "mobilequant/export/int_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/decoder.h"
#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/quant/primitives.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kInt16Max = 32767;

/// The linear weight sites, in the order blocks list them.
constexpr WeightSite kLinearSites[] = {WeightSite::kQProj, WeightSite::kKProj, WeightSite::kVProj,
                                       WeightSite::kOProj, WeightSite::kGate,  WeightSite::kUp,
                                       WeightSite::kDown};

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

/// An encoding in the unsigned domain: real = scale * (u - zero_point).
struct Enc {
  int64_t bits = 8;
  std::vector<double> scale;      // one per entry (fp32 values)
  std::vector<int64_t> zero;      // one per entry
  double s() const { return scale.at(0); }
  int64_t z() const { return zero.at(0); }
  int64_t umax() const { return (int64_t{1} << bits) - 1; }
  /// Largest |real| the codes can represent.
  double abs_max() const {
    double m = 0.0;
    for (size_t i = 0; i < scale.size(); ++i)
      m = std::max({m, std::abs(scale[i] * static_cast<double>(-zero[i])),
                    std::abs(scale[i] * static_cast<double>(umax() - zero[i]))});
    return m;
  }
};

/// The table's encodings, looked up by site.
class Encodings {
 public:
  explicit Encodings(const EncodingTable& table) {
    for (const SiteEncoding& e : table.entries) {
      if (!e.site.spec.enabled) continue;
      Enc enc;
      enc.bits = e.site.spec.bits;
      enc.scale = e.scale;
      for (const int64_t off : e.offset) enc.zero.push_back(-off);  // AIMET offset = -z
      if (e.site.is_param)
        weights_[{e.site.layer, static_cast<int>(e.site.weight)}] = enc;
      else
        acts_[{e.site.layer, static_cast<int>(e.site.act)}] = enc;
    }
  }
  const Enc& act(int64_t layer, ActSite site) const {
    const auto it = acts_.find({layer, static_cast<int>(site)});
    MQ_CHECK(it != acts_.end(), "integer model: no encoding for ",
             qualified_site_name(layer, site));
    return it->second;
  }
  const Enc& weight(int64_t layer, WeightSite site) const {
    const auto it = weights_.find({layer, static_cast<int>(site)});
    MQ_CHECK(it != weights_.end(), "integer model: no encoding for ", layer_prefix(layer),
             to_string(site), ".weight");
    return it->second;
  }

 private:
  std::map<std::pair<int64_t, int>, Enc> acts_, weights_;
};

torch::Tensor i32(const std::vector<int32_t>& v) {
  return torch::tensor(v, torch::kInt32);  // [n]
}

/// Adds name.multiplier (I64) / name.shift (I32) (or name.<stem>_multiplier / _shift) for the
/// values `m`.
void put_fixed(TensorMap& out, const std::string& base, const std::vector<long double>& m,
               const std::string& what, int32_t min_shift = kMinShift) {
  std::vector<int64_t> mult;
  std::vector<int32_t> shift;
  for (size_t i = 0; i < m.size(); ++i) {
    const FixedPoint fp = to_fixed_point(
        m[i], what + (m.size() > 1 ? "[" + std::to_string(i) + "]" : ""), min_shift);
    mult.push_back(fp.multiplier);
    shift.push_back(fp.shift);
  }
  out[base + "multiplier"] = torch::tensor(mult, torch::kInt64);  // [n]
  out[base + "shift"] = i32(shift);
}

nlohmann::ordered_json enc_json(const Enc& e) {
  return {{"bits", e.bits}, {"scale", e.s()}, {"zero_point", e.z()}};
}

/// Per-row symmetric int16 codes of `w` [rows, cols] fp32: (codes [rows, cols] int16, scale
/// [rows] fp32).
std::pair<torch::Tensor, torch::Tensor> int16_rows(const torch::Tensor& w) {
  auto wf = w.detach().to(torch::kCPU, torch::kFloat32).contiguous();       // [rows, cols]
  auto amax = wf.abs().amax(1);                                             // [rows]
  auto scale = torch::where(amax > 0, amax / static_cast<double>(kInt16Max),
                            torch::ones_like(amax));                        // [rows]
  auto codes = torch::round(wf / scale.unsqueeze(1))
                   .clamp(-static_cast<double>(kInt16Max), static_cast<double>(kInt16Max))
                   .to(torch::kInt16);                                       // [rows, cols]
  return {codes, scale.contiguous()};
}

}  // namespace

std::vector<IntOpMultiplier> int_block_op_multipliers(
    const std::function<long double(ActSite)>& s, long double s_r) {
  using A = ActSite;
  const long double rope = std::ldexp(1.0L, kRopeFractionBits);  // the tables' 2^62
  return {
      {"self_attn.rope_q", s(A::kQProjOut) / (s(A::kQkBmmIn) * rope)},
      {"self_attn.rope_k", s(A::kKProjOut) / (s(A::kQkBmmIn2) * rope)},
      {"self_attn.v_requant", s(A::kVProjOut) / s(A::kPvBmmIn2)},
      {"self_attn.qk_bmm", s(A::kQkBmmIn) * s(A::kQkBmmIn2) / s(A::kQkBmmOut)},
      {"self_attn.softmax", 1.0L / s(A::kPvBmmIn)},
      {"self_attn.pv_bmm", s(A::kPvBmmIn) * s(A::kPvBmmIn2) / s(A::kPvBmmOut)},
      {"resid_add_1", s(A::kOProjOut) / s_r, kResidualAddMinShift},
      {"mlp.act_fn", s(A::kGateOut) * s(A::kActIn2) / s(A::kActOut)},
      {"mlp.mul", s(A::kActOut) * s(A::kUpOut) / s(A::kDownIn)},
      {"resid_add_2", s(A::kDownOut) / s_r, kResidualAddMinShift},
  };
}

std::pair<ActSite, ActSite> int_linear_io(WeightSite site) {
  switch (site) {
    case WeightSite::kQProj: return {ActSite::kInputNormOut, ActSite::kQProjOut};
    case WeightSite::kKProj: return {ActSite::kInputNormOut, ActSite::kKProjOut};
    case WeightSite::kVProj: return {ActSite::kInputNormOut, ActSite::kVProjOut};
    case WeightSite::kOProj: return {ActSite::kPvBmmOut, ActSite::kOProjOut};
    case WeightSite::kGate: return {ActSite::kPostNormOut, ActSite::kGateOut};
    case WeightSite::kUp: return {ActSite::kPostNormOut, ActSite::kUpOut};
    case WeightSite::kDown: return {ActSite::kDownIn, ActSite::kDownOut};
    default: break;
  }
  throw make_error("int_linear_io: ", to_string(site), " is not a linear weight site");
}

int32_t exp_lut_bits(int64_t max_positions) {
  MQ_CHECK(max_positions >= 1, "exp_lut_bits: max_positions ", max_positions, ", expected >= 1");
  int32_t log2_p = 0;  // ceil(log2(max_positions))
  while ((int64_t{1} << log2_p) < max_positions) ++log2_p;
  const int32_t bits = std::min(kExpLutMaxBits, 62 - log2_p);
  MQ_CHECK(bits >= 30, "exp_lut_bits: ", max_positions, " positions leave the softmax's ",
           "exponential table ", bits, " fraction bits (expected at least 30)");
  return bits;
}

std::vector<int64_t> exp_lut(double step, int64_t size, int32_t bits) {
  MQ_CHECK(std::isfinite(step) && step > 0, "exp_lut: step ", step, ", expected finite and > 0");
  std::vector<int64_t> lut(static_cast<size_t>(size));
  for (int64_t k = 0; k < size; ++k)
    lut[static_cast<size_t>(k)] =
        std::llround(std::ldexp(std::exp(-static_cast<double>(k) * step), bits));
  return lut;
}

EpsTerm to_eps_term(double e, const std::string& what) {
  constexpr double kLimit = 4611686018427387904.0;  // 2^62
  MQ_CHECK(std::isfinite(e) && e >= 0.0 && std::nearbyint(e) < kLimit, "integer model: ", what,
           " eps term eps * C / s_in^2 = ", e, ", expected finite, >= 0 and < 2^62");
  // The largest shift whose rounded value stays below 2^62 (so that value << (48 - shift) and
  // the row's sum of squares << 48 fit the runtime's 128-bit accumulator).
  for (int32_t shift = kEpsTermMaxShift; shift >= 0; --shift) {
    const double v = std::nearbyint(std::ldexp(e, shift));
    if (v < kLimit) return {static_cast<int64_t>(v), shift};
  }
  return {static_cast<int64_t>(std::nearbyint(e)), 0};  // unreachable: e < 2^62 above
}

long double FixedPoint::value() const {
  return std::ldexp(static_cast<long double>(multiplier), -shift);
}

FixedPoint to_fixed_point(long double m, const std::string& what, int32_t min_shift) {
  MQ_CHECK(std::isfinite(m), "integer model: multiplier ", what, " = ",
           static_cast<double>(m), ", expected a finite value");
  FixedPoint fp;
  fp.shift = std::max(fp.shift, min_shift);
  if (m == 0.0L) return fp;
  int e = 0;
  const long double f = std::frexp(std::abs(m), &e);  // |m| = f * 2^e, f in [0.5, 1)
  constexpr long double kTwo63 = 9223372036854775808.0L;
  // f 2^63 in [2^62, 2^63]: exact in long double's 64-bit mantissa before rounding.
  const long double r = std::nearbyint(std::ldexp(f, 63));
  int64_t shift = 63 - e;
  uint64_t mult = 0;
  if (r >= kTwo63) {  // f rounded up to 1
    mult = uint64_t{1} << 62;
    --shift;
  } else {
    mult = static_cast<uint64_t>(r);
  }
  MQ_CHECK(shift >= min_shift, "integer model: multiplier ", what, " = ", static_cast<double>(m),
           " is too large for a fixed-point multiplier (expected below 2^", 63 - min_shift, ")");
  if (shift > kMaxShift) return fp;  // below 2^-95: zero for any 94-bit product
  fp.multiplier = m < 0 ? -static_cast<int64_t>(mult) : static_cast<int64_t>(mult);
  fp.shift = static_cast<int32_t>(shift);
  return fp;
}

void check_int_model_expressible(const QuantConfig& quant) {
  for (const ActSite site : EnumValues<ActSite>::values()) {
    const QuantSpec& spec = quant.act(site);
    const bool wanted = is_block_site(site) && is_reference_site(site);
    const std::string name = std::string(to_string(site));
    if (site == ActSite::kActIn2) continue;  // checked against the model (SiLU only)
    if (!wanted) {
      MQ_CHECK(!spec.enabled, "integer model: preset '", quant.name, "' quantizes site ", name,
               ", which the integer model cannot express (it quantizes exactly the reference "
               "sites; this one repeats a tensor or is kept in float by the reference)");
      continue;
    }
    MQ_CHECK(spec.enabled, "integer model: preset '", quant.name, "' keeps site ", name,
             " in float; the integer model needs every reference site quantized");
    MQ_CHECK(spec.granularity == Granularity::kPerTensor, "integer model: site ", name, " is ",
             to_string(spec.granularity), "; the integer model expresses per_tensor activations "
             "only");
  }
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    const QuantSpec& spec = quant.weight(site);
    const std::string name = std::string(to_string(site)) + ".weight";
    MQ_CHECK(spec.enabled, "integer model: preset '", quant.name, "' keeps ", name,
             " in float; the integer model needs every block weight quantized");
    if (is_norm(site)) {
      MQ_CHECK(spec.granularity == Granularity::kPerTensor, "integer model: site ", name,
               " must be per_tensor, got ", to_string(spec.granularity));
      continue;
    }
    MQ_CHECK(spec.bits <= 8, "integer model: site ", name, " has ", spec.bits,
             "-bit weights; the integer model holds linear weights of at most 8 bits");
    MQ_CHECK(spec.granularity != Granularity::kPerGroup, "integer model: site ", name,
             ": per_group weights cannot be expressed (per_tensor or per_channel only)");
  }
}

void check_int_model_supported(const ModelConfig& cfg) {
  auto refuse = [](const std::string& field, const std::string& got) {
    throw make_error("integer model: the model's ", field, " is ", got,
                     "; the integer model supports LLaMA-family decoders with RMSNorm, SiLU, "
                     "full rotary embeddings and no biases (docs/integer-model.md)");
  };
  if (cfg.norm != NormKind::kRms) refuse("normalisation", "not RMSNorm (w * x / rms)");
  if (cfg.hidden_act != Activation::kSilu) refuse("hidden_act", "not silu");
  if (cfg.partial_rotary_factor != 1.0)
    refuse("partial_rotary_factor", std::to_string(cfg.partial_rotary_factor));
  if (cfg.attention_bias || cfg.o_proj_bias || cfg.mlp_bias) refuse("bias", "present");
  if (cfg.scale_embeddings) refuse("embedding scaling", "on");
  if (cfg.head_dim % 2 != 0) refuse("head_dim", std::to_string(cfg.head_dim) + " (odd)");
}

void write_int_model(const std::string& dir, QuantizedModelImpl& qm, const EncodingTable& table) {
  torch::NoGradGuard no_grad;
  const QuantConfig& quant = qm.quant_config();
  CausalLm model = qm.float_model();
  const ModelConfig& cfg = model->config();
  check_int_model_supported(cfg);
  check_int_model_expressible(quant);
  MQ_CHECK(quant.act(ActSite::kActIn2).enabled, "integer model: preset '", quant.name,
           "' keeps mlp.act_fn.input2 (the sigmoid inside SiLU) in float; the integer model "
           "needs it quantized");
  const Encodings enc(table);
  const int64_t L = cfg.num_hidden_layers, C = cfg.hidden_size, D = cfg.head_dim;
  const double sqrt_c = std::sqrt(static_cast<double>(C));
  const long double sqrt_cl = std::sqrt(static_cast<long double>(C));
  const double eps = cfg.norm_eps;

  TensorMap t;
  nlohmann::ordered_json acts = nlohmann::ordered_json::object();
  nlohmann::ordered_json weights = nlohmann::ordered_json::object();
  nlohmann::ordered_json doc = nlohmann::ordered_json::object();

  // The residual scale (a power of two: residual adds are exact), and the embeddings as int64
  // residual codes: E / s_r, exact for every fp32 E >= 2^23 s_r in magnitude.
  const torch::Tensor emb = model->model->embed_tokens->weight.detach().to(
      torch::kCPU, torch::kFloat64);  // [V, C]
  const double emb_max = std::max(emb.abs().max().item<double>(), 1e-30);
  double bound = emb_max;
  for (int64_t l = 0; l < L; ++l)
    bound += enc.act(l, ActSite::kOProjOut).abs_max() + enc.act(l, ActSite::kDownOut).abs_max();
  int bound_exp = 0;
  (void)std::frexp(bound, &bound_exp);  // bound < 2^bound_exp
  const double s_r = std::ldexp(1.0, bound_exp - kResidualHeadroomBits);
  t["model.embed_tokens.weight_q"] =
      torch::round(emb / s_r).to(torch::kInt64).contiguous();  // [V, C], |.| <= 2^61
  doc["model.embed_tokens.weight_q"] =
      "I64 [V, C] round(E / s_r): embedding rows as residual codes";

  // Rotary tables, Q62: the fp32 values of the model's rotary embedding, exactly (an fp32 value
  // times 2^62 is an integer down to 2^-39).
  const int64_t P = cfg.max_position_embeddings;
  const int32_t exp_bits = exp_lut_bits(P);  // the softmax table's fraction bits
  {
    auto [cos, sin] = model->rope_tables(P, torch::kCPU);  // [1, 1, P, D] fp32
    auto q62 = [&](const torch::Tensor& x) {
      return torch::round(x.reshape({P, D}).narrow(1, 0, D / 2).to(torch::kFloat64) *
                          std::ldexp(1.0, kRopeFractionBits))
          .to(torch::kInt64)
          .contiguous();  // [P, D/2]
    };
    t["rope.cos"] = q62(cos);
    t["rope.sin"] = q62(sin);
    doc["rope.cos"] = "I64 [P, D/2] round(2^62 cos(p * inv_freq_i)), cos in fp32";
    doc["rope.sin"] = "I64 [P, D/2] round(2^62 sin(p * inv_freq_i)), sin in fp32";
  }

  for (int64_t l = 0; l < L; ++l) {
    const std::string pre = layer_prefix(l);
    auto a = [&](ActSite s) -> const Enc& { return enc.act(l, s); };
    for (const ActSite site : EnumValues<ActSite>::values()) {
      if (!is_block_site(site) || !quant.act(site).enabled) continue;
      acts[qualified_site_name(l, site)] = enc_json(a(site));
    }
    LayerWeights stored = model->layer(l)->weights();
    QuantizedLayer ql = qm.layer(l);

    // Linear weights.
    for (const WeightSite ws : kLinearSites) {
      const QuantSpec& spec = quant.weight(ws);
      const std::string name = pre + to_string(ws);
      const torch::Tensor w = weight_of(stored, ws).detach().to(torch::kCPU, torch::kFloat32);  // [N, K]
      const WeightFakeQuantizer& wq = ql->weight_quantizers[static_cast<size_t>(ws)];
      const auto [p, q] = wq->export_codes(w);                     // [1] or [N, 1]; [N, K]
      const torch::Tensor codes = (q - p.qmin).to(torch::kUInt8);  // [N, K]
      const Enc& we = enc.weight(l, ws);
      const int64_t n = w.size(0), k = w.size(1);
      // The table's encoding is the quantizer's: check, so that a mismatch cannot pass.
      const torch::Tensor ps = p.scale.flatten().to(torch::kFloat64);
      for (int64_t i = 0; i < ps.numel(); ++i)
        MQ_CHECK(ps[i].item<double>() == we.scale[static_cast<size_t>(i)], "integer model: ",
                 name, ": weight scale ", i, " differs from the encoding table");
      if (spec.bits <= 4) {
        MQ_CHECK(k % 2 == 0, "integer model: ", name, ": ", k,
                 " input features cannot be packed two per byte (expected even)");
        auto c = codes.reshape({n, k / 2, 2}).to(torch::kInt32);
        t[name + ".weight_q"] = (c.select(2, 0) + c.select(2, 1) * 16).to(torch::kUInt8).contiguous();  // [N, K/2]
      } else {
        t[name + ".weight_q"] = codes.contiguous();
      }
      std::vector<float> sc;
      std::vector<int32_t> zp;
      for (size_t i = 0; i < we.scale.size(); ++i) {
        sc.push_back(static_cast<float>(we.scale[i]));
        zp.push_back(static_cast<int32_t>(we.zero[i]));
      }
      t[name + ".weight_scale"] = torch::tensor(sc, torch::kFloat32);
      t[name + ".weight_zero_point"] = i32(zp);
      const auto [in, out] = int_linear_io(ws);
      std::vector<long double> m;
      for (const double s : we.scale)
        m.push_back(static_cast<long double>(a(in).s()) * s / a(out).s());
      put_fixed(t, name + ".requant_", m, name + " requantization");
      weights[name + ".weight"] = {{"bits", spec.bits},
                                   {"granularity", to_string(spec.granularity)},
                                   {"symmetric", spec.symmetric},
                                   {"packed", spec.bits <= 4},
                                   {"shape", {n, k}},
                                   {"hf_name", pre + hf_module_name(ws) + ".weight"}};
    }

    // Norms.
    for (const WeightSite ws : {WeightSite::kInputNorm, WeightSite::kPostNorm}) {
      const QuantSpec& spec = quant.weight(ws);
      const std::string name = pre + to_string(ws);
      const ActSite in = ws == WeightSite::kInputNorm ? ActSite::kInputNormIn : ActSite::kPostNormIn;
      const ActSite out = ws == WeightSite::kInputNorm ? ActSite::kInputNormOut : ActSite::kPostNormOut;
      const torch::Tensor w = weight_of(stored, ws).detach().to(torch::kCPU, torch::kFloat32);  // [C]
      const WeightFakeQuantizer& wq = ql->weight_quantizers[static_cast<size_t>(ws)];
      const auto [p, q] = wq->export_codes(w);  // [1]; [C] int32
      const torch::Tensor codes = q - p.qmin;   // [C]
      // Exactly (q - o) * s, in fp64: the fp32 product would move the gains by up to 2^-24.
      const torch::Tensor w_hat =
          wq->forward_export_codes(w.to(torch::kFloat64)).contiguous();  // [C] fp64
      t[name + ".weight_q"] = codes.to(spec.bits <= 8 ? torch::kUInt8 : torch::kUInt16).contiguous();
      const Enc& we = enc.weight(l, ws);
      t[name + ".weight_scale"] = torch::tensor({static_cast<float>(we.s())}, torch::kFloat32);
      t[name + ".weight_zero_point"] = i32({static_cast<int32_t>(we.z())});
      put_fixed(t, name + ".input_", {static_cast<long double>(s_r) / a(in).s()},
                name + " residual -> input");
      std::vector<long double> gains(static_cast<size_t>(C));
      const double* wh = w_hat.data_ptr<double>();
      for (int64_t c = 0; c < C; ++c)
        gains[static_cast<size_t>(c)] = wh[c] * sqrt_cl / a(out).s();
      put_fixed(t, name + ".gain_", gains, name + " gain");
      const EpsTerm e_term = to_eps_term(eps * static_cast<double>(C) / (a(in).s() * a(in).s()), name);
      t[name + ".eps_term"] = torch::tensor({e_term.value}, torch::kInt64);
      t[name + ".eps_shift"] = i32({e_term.shift});
      weights[name + ".weight"] = {{"bits", spec.bits},
                                   {"granularity", "per_tensor"},
                                   {"symmetric", spec.symmetric},
                                   {"packed", false},
                                   {"shape", {C}},
                                   {"hf_name", pre + hf_module_name(ws) + ".weight"}};
    }

    // Attention and MLP operators.
    for (const IntOpMultiplier& op :
         int_block_op_multipliers([&](ActSite x) -> long double { return a(x).s(); }, s_r))
      put_fixed(t, pre + op.name + ".", {op.value}, pre + op.name, op.min_shift);

    // exp table of the softmax: k = c_max - c steps of the scores below the row maximum.
    {
      const Enc& sc = a(ActSite::kQkBmmOut);
      const double step = sc.s() / std::sqrt(static_cast<double>(D));
      const std::vector<int64_t> lut = exp_lut(step, sc.umax() + 1, exp_bits);
      t[pre + "self_attn.softmax.exp_lut"] =
          torch::tensor(lut, torch::kInt64).contiguous();  // [2^b]
    }
    // sigmoid table: for each gate code, the act_fn.input2 code, in the simulation's fp32.
    {
      const Enc& g = a(ActSite::kGateOut);
      const Enc& sg = a(ActSite::kActIn2);
      const QuantSpec& gs = quant.act(ActSite::kGateOut);
      const QuantSpec& ss = quant.act(ActSite::kActIn2);
      QParams pg{torch::tensor({static_cast<float>(g.s())}), torch::tensor({static_cast<float>(g.z() + gs.qmin())}),
                 gs.qmin(), gs.qmax()};
      QParams ps{torch::tensor({static_cast<float>(sg.s())}), torch::tensor({static_cast<float>(sg.z() + ss.qmin())}),
                 ss.qmin(), ss.qmax()};
      const torch::Tensor u = torch::arange(g.umax() + 1, torch::kInt32);          // [2^b]
      const torch::Tensor gate = dequantize(u + gs.qmin(), pg).to(torch::kFloat32);  // [2^b]
      const torch::Tensor sig = quantize(torch::sigmoid(gate), ps) - ss.qmin();     // [2^b]
      t[pre + "mlp.act_fn.sigmoid_lut"] = sig.to(torch::kInt32).contiguous();
    }
  }

  // Final norm and lm_head.
  const torch::Tensor wf = model->model->norm->weight.detach().to(torch::kCPU, torch::kFloat32);  // [C]
  const double s_f = std::max(wf.abs().max().item<double>(), 1e-30) * sqrt_c / kInt16Max;
  {
    std::vector<long double> gains(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c)
      gains[static_cast<size_t>(c)] = wf[c].item<double>() * sqrt_cl / s_f;
    put_fixed(t, "model.norm.gain_", gains, "model.norm gain");
    // The final norm reads r >> kFinalNormShift: scale s_r 2^kFinalNormShift.
    const double s_fin = std::ldexp(s_r, kFinalNormShift);
    const EpsTerm e_term = to_eps_term(eps * static_cast<double>(C) / (s_fin * s_fin), "model.norm");
    t["model.norm.eps_term"] = torch::tensor({e_term.value}, torch::kInt64);
    t["model.norm.eps_shift"] = i32({e_term.shift});
  }
  {
    auto [lm_q, lm_s] = int16_rows(cfg.tie_word_embeddings ? model->model->embed_tokens->weight
                                                            : model->lm_head->weight);  // [V, C], [V]
    t["lm_head.weight_q"] = lm_q;
    t["lm_head.weight_scale"] = lm_s;
    doc["lm_head.weight_q"] = "I16 [V, C] symmetric per row (of the embedding when tied)";
  }

  nlohmann::ordered_json m;
  m["format"] = kIntFormatName;
  m["version"] = kIntFormatVersion;
  m["model"] = {{"architecture", "llama"},
                {"hidden_size", C},
                {"intermediate_size", cfg.intermediate_size},
                {"num_hidden_layers", L},
                {"num_attention_heads", cfg.num_attention_heads},
                {"num_key_value_heads", cfg.num_key_value_heads},
                {"head_dim", D},
                {"vocab_size", cfg.vocab_size},
                {"max_positions", P},
                {"rms_norm_eps", eps},
                {"hidden_act", "silu"},
                {"tie_word_embeddings", cfg.tie_word_embeddings}};
  m["preset"] = quant.name;
  m["residual"] = {{"bits", 64}, {"scale", s_r}, {"bound", bound},
                  {"final_norm_shift", kFinalNormShift}};
  m["softmax"] = {{"exp_bits", exp_bits}};
  m["final_norm_output"] = {{"bits", 16}, {"scale", s_f}, {"zero_point", 0}};
  m["activations"] = acts;
  m["weights"] = weights;
  doc["<layer>.<linear>.weight_q"] = "U8 [N, K] codes (U8 [N, K/2] packed, low nibble first, when bits <= 4)";
  doc["<layer>.<linear>.requant_multiplier"] = "I64 [N] or [1]: s_in * s_w / s_out";
  doc["<layer>.<norm>.gain_multiplier"] = "I64 [C]: w_hat * sqrt(C) / s_out (signed)";
  doc["<layer>.self_attn.softmax.exp_lut"] =
      "I64 [2^b] round(2^F exp(-k s_scores / sqrt(D))), F = softmax.exp_bits";
  doc["<layer>.mlp.act_fn.sigmoid_lut"] = "I32 [2^b] act_fn.input2 code per gate code";
  doc["layout"] = "docs/integer-model.md";
  m["tensors"] = doc;

  fs::create_directories(dir);
  write_safetensors(dir + "/" + kIntTensorsFile, t, {{"format", kIntFormatName}});
  write_file_atomically(dir + "/" + kIntManifestFile, m.dump(2) + "\n");
}

}  // namespace mq
