// mobilequant/export/onnx_qdq.cpp
// The graph mirrors models/decoder.cpp's hooked forward (ForwardHooks path) op for op; each
// section names the decoder function it follows. Shapes in comments: B = 1, T = sequence,
// C = hidden, H = heads, KV = key/value heads, D = head_dim, F = intermediate, V = vocab.
#include "mobilequant/export/onnx_qdq.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "mobilequant/core/error.h"
#include "mobilequant/export/onnx_proto.h"
#include "mobilequant/models/decoder.h"
#include "mobilequant/quant/primitives.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

namespace {

using onnx::DataType;

/// ir_version for an opset: IR 7 carries opset 13; IR 10 (ONNX 1.16) is the first with
/// uint4/int4 and opset 21.
int64_t ir_version_for(int64_t opset) { return opset >= 21 ? 10 : 7; }

/// protobuf's hard limit on one message (2 GiB - 1).
constexpr uint64_t kProtobufLimit = 2147483647ull;

// ---------------------------------------------------------------------------- raw data

/// Appends `v` little-endian in `n` bytes.
void put_le(std::string& out, uint64_t v, int n) {
  for (int b = 0; b < n; ++b) out.push_back(static_cast<char>((v >> (8 * b)) & 0xFF));
}

/// fp32 values as raw_data.
std::string pack_floats(const float* p, size_t n) {
  std::string out;
  out.reserve(n * 4);
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = 0;
    std::memcpy(&bits, &p[i], 4);
    put_le(out, bits, 4);
  }
  return out;
}

/// Code range of an integer container.
std::pair<int64_t, int64_t> container_range(DataType t) {
  switch (t) {
    case DataType::kUint4: return {0, 15};
    case DataType::kInt4: return {-8, 7};
    case DataType::kUint8: return {0, 255};
    case DataType::kInt8: return {-128, 127};
    case DataType::kUint16: return {0, 65535};
    case DataType::kInt16: return {-32768, 32767};
    case DataType::kInt32:
      return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    default: break;
  }
  throw make_error("onnx export: ", onnx::to_string(t), " is no integer container");
}

/// The container of `bits` codes: unsigned (uint4/uint8/uint16) or signed (int4/int8/int16).
DataType container(int64_t bits, bool is_signed) {
  switch (bits) {
    case 4: return is_signed ? DataType::kInt4 : DataType::kUint4;
    case 8: return is_signed ? DataType::kInt8 : DataType::kUint8;
    case 16: return is_signed ? DataType::kInt16 : DataType::kUint16;
    default: break;
  }
  throw make_error("onnx export: no ONNX container for ", bits, "-bit codes (expected 4, 8, 16)");
}

/// The smallest opset whose QuantizeLinear/DequantizeLinear take `t`.
int64_t opset_of(DataType t) {
  switch (t) {
    case DataType::kUint8:
    case DataType::kInt8:
    case DataType::kInt32: return 13;
    default: return 21;
  }
}

// ---------------------------------------------------------------------------- graph builder

/// Appends nodes and initializers to a GraphProto and hands out unique tensor names.
class GraphBuilder {
 public:
  explicit GraphBuilder(int64_t opset) : opset_(opset) {}

  int64_t opset() const { return opset_; }
  onnx::GraphProto& graph() { return graph_; }

  /// Adds node `op` reading `inputs`, writing one new tensor (named from `hint`); returns it.
  std::string op(const std::string& op_type, std::vector<std::string> inputs,
                 const std::string& hint, std::vector<onnx::AttributeProto> attrs = {}) {
    const std::string out = fresh(hint);
    op_to(op_type, std::move(inputs), out, std::move(attrs));
    return out;
  }

  /// Adds node `op` writing the tensor named `out` (which must be new).
  void op_to(const std::string& op_type, std::vector<std::string> inputs,
             const std::string& out, std::vector<onnx::AttributeProto> attrs = {}) {
    MQ_CHECK(names_.insert(out).second || pending_.count(out) != 0,
             "onnx export: tensor name '", out, "' used twice");
    pending_.erase(out);
    for (auto& in : inputs) {
      in = resolve(in);
      if (!in.empty()) consumed_.insert(in);
    }
    onnx::NodeProto n;
    n.inputs = std::move(inputs);
    n.outputs = {out};
    n.name = "node_" + std::to_string(graph_.nodes.size()) + "_" + op_type;
    n.op_type = op_type;
    n.attributes = std::move(attrs);
    graph_.nodes.push_back(std::move(n));
  }

  /// Gives tensor `t` the name `name` (an encoding name): renames it in place when the last
  /// node produced it and nothing read it yet, else adds an Identity. Returns `name`.
  std::string name_tensor(const std::string& t_in, const std::string& name) {
    const std::string t = resolve(t_in);
    if (t == name) return name;
    MQ_CHECK(names_.count(name) == 0, "onnx export: tensor name '", name, "' used twice");
    if (!graph_.nodes.empty() && graph_.nodes.back().outputs.size() == 1 &&
        graph_.nodes.back().outputs[0] == t && consumed_.count(t) == 0) {
      graph_.nodes.back().outputs[0] = name;
      alias_[t] = name;  // later references to t read the renamed tensor
      names_.erase(t);
      names_.insert(name);
      return name;
    }
    op_to("Identity", {t}, name_reserved(name));
    return name;
  }

  /// Adds an initializer named `name` (exactly); returns the name.
  std::string initializer(const std::string& name, DataType t, std::vector<int64_t> dims,
                          std::string raw) {
    MQ_CHECK(names_.insert(name).second, "onnx export: initializer name '", name,
             "' used twice");
    onnx::TensorProto tp;
    tp.name = name;
    tp.data_type = t;
    tp.dims = std::move(dims);
    tp.raw_data = std::move(raw);
    bytes_ += tp.raw_data.size();
    graph_.initializers.push_back(std::move(tp));
    return name;
  }

  /// An fp32 initializer from a CPU tensor (any shape); `name` exactly.
  std::string float_initializer(const std::string& name, const torch::Tensor& t) {
    auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    return initializer(name, DataType::kFloat, c.sizes().vec(),
                       pack_floats(c.data_ptr<float>(), static_cast<size_t>(c.numel())));
  }

  /// A float scalar initializer (shared by value).
  std::string float_scalar(float v) {
    uint32_t bits = 0;
    std::memcpy(&bits, &v, 4);
    const std::string key = "f" + std::to_string(bits);
    auto it = consts_.find(key);
    if (it != consts_.end()) return it->second;
    const std::string name = fresh("const_f32");
    initializer(name, DataType::kFloat, {}, pack_floats(&v, 1));
    consts_[key] = name;
    return name;
  }

  /// An int64 1-D initializer (shared by value); `scalar`: shape [] (one value).
  std::string i64(const std::vector<int64_t>& v, bool scalar = false) {
    std::string key = scalar ? "s" : "v";
    for (const int64_t x : v) key += "_" + std::to_string(x);
    auto it = consts_.find(key);
    if (it != consts_.end()) return it->second;
    const std::string name = fresh("const_i64");
    std::vector<int64_t> dims;
    if (!scalar) dims = {static_cast<int64_t>(v.size())};
    initializer(name, DataType::kInt64, dims, onnx::pack_integers(v, DataType::kInt64));
    consts_[key] = name;
    return name;
  }

  /// A fresh tensor name from `hint`.
  std::string fresh(const std::string& hint) {
    std::string name = hint;
    while (names_.count(name) != 0 || pending_.count(name) != 0)
      name = hint + "_" + std::to_string(++counter_);
    pending_.insert(name);
    return name;
  }

  /// The current name of tensor `t` (after renames).
  std::string resolve(const std::string& t) const {
    std::string cur = t;
    for (auto it = alias_.find(cur); it != alias_.end(); it = alias_.find(cur)) cur = it->second;
    return cur;
  }

  /// Total initializer bytes so far.
  uint64_t initializer_bytes() const { return bytes_; }

 private:
  std::string name_reserved(const std::string& name) {
    pending_.insert(name);
    return name;
  }

  int64_t opset_;
  onnx::GraphProto graph_;
  std::set<std::string> names_;     // tensors that exist (node outputs, initializers, inputs)
  std::set<std::string> pending_;   // names handed out by fresh() not yet produced
  std::set<std::string> consumed_;  // tensors some node reads
  std::map<std::string, std::string> consts_;
  std::map<std::string, std::string> alias_;  // renamed tensor -> its new name
  int64_t counter_ = 0;
  uint64_t bytes_ = 0;
};

// ---------------------------------------------------------------------------- the exporter

/// One activation site's Q/DQ parameters in ONNX terms.
struct ActQdq {
  DataType type = DataType::kUint8;  // container of the codes
  int64_t zero_point = 0;            // in the container
  float scale = 1.0f;
  bool clip = false;                 // wider-container form: Clip to [lo*s, hi*s] after DQ
  int64_t lo = 0, hi = 0;            // integer bounds of q - o when clip
};

/// The ONNX form of an activation encoding (see the header). Throws naming the site when no
/// container holds it.
ActQdq act_qdq(const SiteEncoding& enc) {
  const std::string name = enc.site.tensor_name();
  const int64_t bits = enc.site.spec.bits;
  MQ_CHECK(enc.scale.size() == 1 && enc.offset.size() == 1, "onnx export: ", name, ": ",
           enc.scale.size(), " encodings, expected 1 (per-tensor activation)");
  ActQdq a;
  a.scale = static_cast<float>(enc.scale[0]);
  a.type = container(bits, /*is_signed=*/false);
  const int64_t zp = -enc.offset[0];  // unsigned domain: u = q - qmin, zp = o - qmin
  const auto [cmin, cmax] = container_range(a.type);
  if (zp >= cmin && zp <= cmax) {
    a.zero_point = zp;
    return a;
  }
  // q - o = clamp(round(x / s), lo, hi) with lo = qmin - o = offset_aimet, hi = lo + 2^b - 1.
  a.lo = enc.offset[0];
  a.hi = a.lo + ((int64_t{1} << bits) - 1);
  a.clip = true;
  a.zero_point = 0;
  for (const DataType wide : {DataType::kUint16, DataType::kInt16}) {
    const auto [wmin, wmax] = container_range(wide);
    if (bits < 16 && a.lo >= wmin && a.hi <= wmax) {
      a.type = wide;
      return a;
    }
  }
  throw make_error("onnx export: ", name, ": ", bits, "-bit range [", enc.min(0), ", ",
                   enc.max(0), "] (offset ", enc.offset[0],
                   ") excludes 0 and no wider Q/DQ container holds its codes [", a.lo, ", ",
                   a.hi, "]");
}

/// Builds the graph of one model.
class QdqExporter {
 public:
  QdqExporter(const QuantizedModelImpl& qm, const EncodingTable& table, int64_t opset)
      : qm_(qm), model_(qm.float_model()), cfg_(model_->config()), g_(opset) {
    for (const SiteEncoding& e : table.entries) by_name_[e.site.tensor_name()] = &e;
  }

  onnx::GraphProto build(int64_t max_positions) {
    torch::NoGradGuard no_grad;
    const int64_t c = cfg_.hidden_size;
    // Inputs and the dynamic sequence length.
    onnx::ValueInfoProto in;
    in.name = "input_ids";
    in.elem_type = DataType::kInt64;
    in.shape = {onnx::Dimension{1, ""}, onnx::Dimension{0, "T"}};
    g_.graph().inputs.push_back(in);
    const std::string shape = g_.op("Shape", {"input_ids"}, "input_shape");       // [2]
    const std::string t_scalar =
        g_.op("Gather", {shape, g_.i64({1}, true)}, "seq_len", {onnx::attr_int("axis", 0)});
    const std::string t_vec = g_.op("Unsqueeze", {t_scalar, g_.i64({0})}, "seq_len_1d");  // [1]

    // RoPE tables for positions 0..T-1: rope_tables(max_positions) sliced (decoder.cpp
    // RotaryEmbedding::tables; the same fp32 values for every position).
    auto [cos_full, sin_full] = model_->rope_tables(max_positions, torch::kCPU);  // [1,1,P,R]
    const int64_t r = cos_full.size(-1);
    const std::string cos_tab = g_.float_initializer("rope.cos", cos_full.reshape({max_positions, r}));
    const std::string sin_tab = g_.float_initializer("rope.sin", sin_full.reshape({max_positions, r}));
    cos_ = g_.op("Slice", {cos_tab, g_.i64({0}), t_vec, g_.i64({0})}, "rope_cos");  // [T, R]
    sin_ = g_.op("Slice", {sin_tab, g_.i64({0}), t_vec, g_.i64({0})}, "rope_sin");  // [T, R]

    // Causal mask: key j visible from query i iff j <= i (ForwardHooks::attention_probs).
    const std::string pos = g_.op("Range", {g_.i64({0}, true), t_scalar, g_.i64({1}, true)},
                                  "positions");                                    // [T]
    const std::string rows = g_.op("Unsqueeze", {pos, g_.i64({1})}, "query_pos");  // [T, 1]
    const std::string cols = g_.op("Unsqueeze", {pos, g_.i64({0})}, "key_pos");    // [1, T]
    causal_ = g_.op("LessOrEqual", {cols, rows}, "causal_mask");                   // [T, T] bool
    neg_inf_ = g_.float_scalar(-std::numeric_limits<float>::infinity());

    // Embedding (CausalLmImpl::embed; llama: no scale).
    const std::string emb_w =
        g_.float_initializer("model.embed_tokens.weight", model_->model->embed_tokens->weight);
    std::string h = g_.op("Gather", {emb_w, "input_ids"}, "embeddings", {onnx::attr_int("axis", 0)});
    h = site(-1, ActSite::kEmbedOut, h);                                          // [1, T, C]

    for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) h = block(i, h);

    h = site(-1, ActSite::kFinalNormIn, h);
    const std::string fw = g_.float_initializer("model.norm.weight", model_->model->norm->weight);
    h = rms_norm(h, fw, model_->model->norm->eps, "model.norm");                  // [1, T, C]
    h = site(-1, ActSite::kFinalNormOut, h);
    std::string head_t;  // [C, V]
    if (cfg_.tie_word_embeddings) {
      head_t = g_.op("Transpose", {emb_w}, "lm_head.weight_t", {onnx::attr_ints("perm", {1, 0})});
    } else {
      head_t = g_.float_initializer("lm_head.weight_t", model_->lm_head->weight.t());
    }
    std::string logits = g_.op("MatMul", {h, head_t}, "lm_head.output_f");        // [1, T, V]
    logits = site(-1, ActSite::kLmHeadOut, logits);
    g_.name_tensor(logits, "logits");
    onnx::ValueInfoProto out;
    out.name = "logits";
    out.elem_type = DataType::kFloat;
    out.shape = {onnx::Dimension{1, ""}, onnx::Dimension{0, "T"},
                 onnx::Dimension{cfg_.vocab_size, ""}};
    g_.graph().outputs.push_back(out);
    (void)c;
    return std::move(g_.graph());
  }

  uint64_t initializer_bytes() const { return g_.initializer_bytes(); }

 private:
  // -------------------------------------------------------------- sites

  /// The activation at (layer, site) as the hooked forward continues with it: Q -> DQ when
  /// the site is enabled (QuantizedModelImpl::activation), else `x` itself.
  std::string site(int64_t layer, ActSite s, const std::string& x) {
    const QuantSpec& spec = qm_.quant_config().act(s);
    if (!spec.enabled) return x;
    if (s == ActSite::kActIn2 && cfg_.hidden_act != Activation::kSilu) return x;
    const std::string name = qualified_site_name(layer, s);
    const auto it = by_name_.find(name);
    MQ_CHECK(it != by_name_.end() && it->second->site.spec.enabled, "onnx export: ", name,
             ": the encoding table has no encoding for this enabled site");
    const SiteEncoding& enc = *it->second;
    const ActQdq a = act_qdq(enc);
    MQ_CHECK(opset_of(a.type) <= g_.opset(), "onnx export: ", name, ": needs ",
             onnx::to_string(a.type), " Q/DQ (opset ", opset_of(a.type), "), the graph is opset ",
             g_.opset());
    const std::string t = g_.name_tensor(x, name);
    const std::string scale = g_.initializer(name + "_scale", DataType::kFloat, {},
                                             pack_floats(&a.scale, 1));
    const std::string zp =
        g_.initializer(name + "_zero_point", a.type, {}, onnx::pack_integers({a.zero_point}, a.type));
    const std::string q = g_.op("QuantizeLinear", {t, scale, zp}, name + "_q");
    std::string dq = g_.op("DequantizeLinear", {q, scale, zp}, name + "_dq");
    if (a.clip) {
      const float lo = static_cast<float>(a.lo) * a.scale;  // fp32, as (q - o) * s
      const float hi = static_cast<float>(a.hi) * a.scale;
      dq = g_.op("Clip", {dq, g_.float_scalar(lo), g_.float_scalar(hi)}, name + "_dq_clip");
    }
    return dq;
  }

  /// The weight of `ws` in block `layer` as the block computes with it: DQ of integer codes
  /// (or the float weight when the site is off). Linear weights come back transposed [in, out].
  std::string weight(int64_t layer, WeightSite ws, const torch::Tensor& stored) {
    const bool norm = is_norm(ws);
    const std::string name = "model.layers." + std::to_string(layer) + "." + to_string(ws) + ".weight";
    torch::Tensor w = stored.detach().to(torch::kCPU, torch::kFloat32).contiguous();  // [out, in] / [C]
    const QuantSpec& spec = qm_.quant_config().weight(ws);
    if (!spec.enabled) return g_.float_initializer(name, norm ? w : w.t());
    const QuantizedLayer ql = qm_.layer(layer);
    const WeightFakeQuantizer& wq = ql->weight_quantizers[static_cast<size_t>(ws)];
    MQ_CHECK(!wq.is_empty(), "onnx export: ", name, ": the model has no weight quantizer there");
    MQ_CHECK(!wq->lwc_enabled(), "onnx export: ", name,
             ": the weight quantizer still has learnable clipping bounds; fold the model first");
    const QParams p = wq->qparams(w);                                  // [1] or [out, 1]
    const torch::Tensor codes =
        quantize(grouped_weight(w, spec), p).reshape(w.sizes()).to(torch::kInt64);  // as w
    const torch::Tensor scale = p.scale.flatten().to(torch::kFloat32).contiguous();  // [n]
    const torch::Tensor offset = p.offset.flatten().to(torch::kFloat32).contiguous();  // [n]
    const int64_t n = scale.numel();
    // The table was read from the same quantizer: its scales must be these.
    const auto it = by_name_.find(name);
    MQ_CHECK(it != by_name_.end(), "onnx export: ", name, ": no encoding in the table");
    const SiteEncoding& enc = *it->second;
    MQ_CHECK(static_cast<int64_t>(enc.scale.size()) == n, "onnx export: ", name, ": the table has ",
             enc.scale.size(), " scales, the weight quantizer ", n);
    for (int64_t k = 0; k < n; ++k) {
      const float st = static_cast<float>(enc.scale[static_cast<size_t>(k)]);
      const float sm = scale[k].item<float>();
      MQ_CHECK(st == sm, "onnx export: ", name, ": scale[", k, "] is ", st,
               " in the encoding table but ", sm, " from the model's weight (table built from "
               "another model?)");
    }
    // Container: symmetric -> signed with zp 0; asymmetric -> unsigned with zp = o.
    DataType type = container(spec.bits, spec.symmetric);
    std::vector<int64_t> zps(static_cast<size_t>(n));
    bool fits = true;
    const auto [cmin, cmax] = container_range(type);
    for (int64_t k = 0; k < n; ++k) {
      const float o = offset[k].item<float>();
      MQ_CHECK(std::nearbyint(o) == o, "onnx export: ", name, ": offset[", k, "] = ", o,
               " is not an integer");
      zps[static_cast<size_t>(k)] = static_cast<int64_t>(o);
      if (zps[static_cast<size_t>(k)] < cmin || zps[static_cast<size_t>(k)] > cmax) fits = false;
    }
    torch::Tensor values = codes;  // as w, int64
    if (!fits) {
      // Range excludes 0 (RMSNorm weights): int32 values q - o, no zero-point.
      type = DataType::kInt32;
      const torch::Tensor o_b = norm || n == 1 ? offset.to(torch::kInt64).reshape({n == 1 ? 1 : n})
                                               : offset.to(torch::kInt64).reshape({n, 1});
      values = codes - o_b;
    }
    MQ_CHECK(opset_of(type) <= g_.opset(), "onnx export: ", name, ": needs ",
             onnx::to_string(type), " DequantizeLinear (opset ", opset_of(type),
             "), the graph is opset ", g_.opset());
    if (!norm) values = values.t().contiguous();  // [in, out]
    const torch::Tensor flat = values.flatten().contiguous();
    std::vector<int64_t> v(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel());
    const auto [vmin, vmax] = container_range(type);
    for (size_t k = 0; k < v.size(); ++k)
      MQ_CHECK(v[k] >= vmin && v[k] <= vmax, "onnx export: ", name, ": code ", v[k],
               " outside ", onnx::to_string(type), " [", vmin, ", ", vmax, "]");
    const std::string codes_name = g_.initializer(name, type, values.sizes().vec(), onnx::pack_integers(v, type));
    std::vector<int64_t> sdims;
    if (n > 1) sdims = {n};
    const std::string scale_name = g_.initializer(
        name + "_scale", DataType::kFloat, sdims,
        pack_floats(scale.data_ptr<float>(), static_cast<size_t>(n)));
    std::vector<std::string> inputs = {codes_name, scale_name};
    if (type != DataType::kInt32)
      inputs.push_back(g_.initializer(name + "_zero_point", type, sdims, onnx::pack_integers(zps, type)));
    std::vector<onnx::AttributeProto> attrs;
    if (n > 1) attrs.push_back(onnx::attr_int("axis", 1));  // output channel of [in, out]
    return g_.op("DequantizeLinear", inputs, name + "_dq", attrs);
  }

  /// x [.., in] @ W^T [in, out] (+ bias): torch::nn::functional::linear.
  std::string linear(const std::string& x, const std::string& w_t, const torch::Tensor& bias,
                     const std::string& hint) {
    std::string y = g_.op("MatMul", {x, w_t}, hint);
    if (bias.defined()) y = g_.op("Add", {y, g_.float_initializer(hint + ".bias", bias)}, hint + "_bias");
    return y;
  }

  // -------------------------------------------------------------- ops

  /// NormImpl::apply, kRms: weight * (x * rsqrt(mean(x^2, -1) + eps)), in that order.
  std::string rms_norm(const std::string& x, const std::string& w, double eps,
                       const std::string& hint) {
    const std::string sq = g_.op("Mul", {x, x}, hint + "_sq");                 // [1, T, C]
    std::string mean;                                                          // [1, T, 1]
    if (g_.opset() >= 18) {
      mean = g_.op("ReduceMean", {sq, g_.i64({-1})}, hint + "_mean", {onnx::attr_int("keepdims", 1)});
    } else {
      mean = g_.op("ReduceMean", {sq}, hint + "_mean",
                   {onnx::attr_ints("axes", {-1}), onnx::attr_int("keepdims", 1)});
    }
    const std::string var = g_.op("Add", {mean, g_.float_scalar(static_cast<float>(eps))}, hint + "_var");
    const std::string rms = g_.op("Sqrt", {var}, hint + "_rms");
    const std::string inv = g_.op("Reciprocal", {rms}, hint + "_rsqrt");
    const std::string y = g_.op("Mul", {x, inv}, hint + "_normed");            // [1, T, C]
    return g_.op("Mul", {w, y}, hint + "_out");                                // [1, T, C]
  }

  /// RotaryEmbedding::apply, full rotary: x * cos + rotate_half(x) * sin. x [1, N, T, D].
  std::string rope(const std::string& x, const std::string& hint) {
    const int64_t d = cfg_.head_dim;
    const std::string x1 = g_.op("Slice", {x, g_.i64({0}), g_.i64({d / 2}), g_.i64({3})}, hint + "_x1");
    const std::string x2 = g_.op("Slice", {x, g_.i64({d / 2}), g_.i64({d}), g_.i64({3})}, hint + "_x2");
    const std::string nx2 = g_.op("Neg", {x2}, hint + "_neg_x2");
    const std::string rot = g_.op("Concat", {nx2, x1}, hint + "_rotate_half", {onnx::attr_int("axis", -1)});
    const std::string a = g_.op("Mul", {x, cos_}, hint + "_cos");              // [1, N, T, D]
    const std::string b = g_.op("Mul", {rot, sin_}, hint + "_sin");            // [1, N, T, D]
    return g_.op("Add", {a, b}, hint + "_rope");                               // [1, N, T, D]
  }

  /// repeat_kv: [1, KV, T, D] -> [1, KV*rep, T, D] (KV head j serves heads j*rep..).
  std::string repeat_kv(const std::string& x, int64_t rep, const std::string& hint) {
    if (rep == 1) return x;
    const std::string u = g_.op("Unsqueeze", {x, g_.i64({2})}, hint + "_unsq");  // [1, KV, 1, T, D]
    const std::string e = g_.op("Expand", {u, g_.i64({1, 1, rep, 1, 1})}, hint + "_expand");
    return g_.op("Reshape", {e, g_.i64({0, cfg_.num_attention_heads, -1, cfg_.head_dim})},
                 hint + "_rep");                                                // [1, H, T, D]
  }

  // -------------------------------------------------------------- block

  /// DecoderLayerImpl::forward with AttentionImpl::forward and MlpImpl::forward.
  std::string block(int64_t i, const std::string& x) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const DecoderLayer layer = model_->layer(i);
    const LayerWeights w = layer->weights();
    check_scales(i);
    const int64_t nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads, d = cfg_.head_dim;

    // input_layernorm
    std::string h = site(i, ActSite::kInputNormIn, x);                          // [1, T, C]
    const std::string n1w = weight(i, WeightSite::kInputNorm, w.input_layernorm.weight);
    h = rms_norm(h, n1w, layer->input_layernorm->eps, p + "input_layernorm");
    h = site(i, ActSite::kInputNormOut, h);

    // attention projections
    const auto proj = [&](ActSite in, ActSite out, WeightSite ws, const LinearWeights& lw,
                          const char* nm) {
      const std::string wt = weight(i, ws, lw.weight);                         // [C, N*D]
      return site(i, out, linear(site(i, in, h), wt, lw.bias, p + "self_attn." + nm));
    };
    std::string q = proj(ActSite::kQProjIn, ActSite::kQProjOut, WeightSite::kQProj, w.q_proj, "q_proj");
    std::string k = proj(ActSite::kKProjIn, ActSite::kKProjOut, WeightSite::kKProj, w.k_proj, "k_proj");
    std::string v = proj(ActSite::kVProjIn, ActSite::kVProjOut, WeightSite::kVProj, w.v_proj, "v_proj");
    const auto heads = [&](const std::string& t, int64_t n, const std::string& hint) {
      const std::string r = g_.op("Reshape", {t, g_.i64({0, 0, n, d})}, hint + "_heads");  // [1, T, N, D]
      return g_.op("Transpose", {r}, hint + "_bhtd", {onnx::attr_ints("perm", {0, 2, 1, 3})});
    };
    // Each site right after its tensor is made (the same values as the decoder's order, and
    // the tensor can take the site's name without an Identity).
    q = site(i, ActSite::kQkBmmIn, rope(heads(q, nh, p + "q"), p + "q"));       // [1, H, T, D]
    k = site(i, ActSite::kQkBmmIn2, rope(heads(k, nkv, p + "k"), p + "k"));     // [1, KV, T, D]
    v = site(i, ActSite::kPvBmmIn2, heads(v, nkv, p + "v"));                    // [1, KV, T, D]
    const int64_t rep = nh / nkv;
    k = repeat_kv(k, rep, p + "k");                                             // [1, H, T, D]
    v = repeat_kv(v, rep, p + "v");                                             // [1, H, T, D]
    const std::string kt = g_.op("Transpose", {k}, p + "k_t", {onnx::attr_ints("perm", {0, 1, 3, 2})});
    std::string s = g_.op("MatMul", {q, kt}, p + "scores");                     // [1, H, T, T]
    // ForwardHooks::attention_probs: site, * 1/sqrt(D) (fp32), causal mask, fp32 softmax, site.
    s = site(i, ActSite::kQkBmmOut, s);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    s = g_.op("Mul", {s, g_.float_scalar(scale)}, p + "scores_scaled");
    s = g_.op("Where", {causal_, s, neg_inf_}, p + "scores_masked");            // [1, H, T, T]
    std::string probs = g_.op("Softmax", {s}, p + "probs", {onnx::attr_int("axis", -1)});
    probs = site(i, ActSite::kPvBmmIn, probs);
    std::string ctx = g_.op("MatMul", {probs, v}, p + "context");               // [1, H, T, D]
    ctx = g_.op("Transpose", {ctx}, p + "context_bthd", {onnx::attr_ints("perm", {0, 2, 1, 3})});
    ctx = g_.op("Reshape", {ctx, g_.i64({0, 0, nh * d})}, p + "context_flat");  // [1, T, H*D]
    ctx = site(i, ActSite::kPvBmmOut, ctx);
    ctx = site(i, ActSite::kOProjIn, ctx);
    const std::string ow = weight(i, WeightSite::kOProj, w.o_proj.weight);      // [H*D, C]
    std::string attn = site(i, ActSite::kOProjOut, linear(ctx, ow, w.o_proj.bias, p + "self_attn.o_proj"));
    std::string r = g_.op("Add", {x, attn}, p + "resid_add_1");                 // [1, T, C]
    r = site(i, ActSite::kResidAdd1Out, r);

    // post_attention_layernorm
    h = site(i, ActSite::kPostNormIn, r);
    const std::string n2w = weight(i, WeightSite::kPostNorm, w.post_attention_layernorm.weight);
    h = rms_norm(h, n2w, layer->post_attention_layernorm->eps, p + "post_attention_layernorm");
    h = site(i, ActSite::kPostNormOut, h);

    // MLP (reference names: w1 = gate, w3 = up, w2 = down)
    const std::string gw = weight(i, WeightSite::kGate, w.gate_proj.weight);    // [C, F]
    const std::string uw = weight(i, WeightSite::kUp, w.up_proj.weight);        // [C, F]
    const std::string dw = weight(i, WeightSite::kDown, w.down_proj.weight);    // [F, C]
    std::string gate = site(i, ActSite::kGateOut,
                            linear(site(i, ActSite::kGateIn, h), gw, w.gate_proj.bias, p + "mlp.w1"));
    const std::string up = site(i, ActSite::kUpOut,
                                linear(site(i, ActSite::kUpIn, h), uw, w.up_proj.bias, p + "mlp.w3"));
    gate = site(i, ActSite::kActIn, gate);                                      // [1, T, F]
    std::string sig = g_.op("Sigmoid", {gate}, p + "mlp.act_fn.sigmoid");
    sig = site(i, ActSite::kActIn2, sig);
    std::string act = g_.op("Mul", {gate, sig}, p + "mlp.act_fn.silu");         // [1, T, F]
    act = site(i, ActSite::kActOut, act);
    std::string hm = g_.op("Mul", {act, up}, p + "mlp.gated");                  // [1, T, F]
    hm = site(i, ActSite::kDownIn, hm);
    const std::string mlp = site(i, ActSite::kDownOut, linear(hm, dw, w.down_proj.bias, p + "mlp.w2"));
    std::string out = g_.op("Add", {r, mlp}, p + "resid_add_2");                // [1, T, C]
    return site(i, ActSite::kResidAdd2Out, out);
  }

  /// A folded model's equivalent-transform scales are all 1 (fold() resets them).
  void check_scales(int64_t i) const {
    const QuantizedLayer ql = qm_.layer(i);
    if (ql->scales.is_empty()) return;
    for (const auto& pr : ql->scales->named_parameters()) {
      MQ_CHECK(torch::all(pr.value().detach().cpu() == 1.0).item<bool>(), "onnx export: block ",
               i, ": equivalent-transform scale '", pr.key(),
               "' is not 1; fold the model first (a saved quantized model is folded)");
    }
  }

  const QuantizedModelImpl& qm_;
  CausalLm model_;
  const ModelConfig& cfg_;
  GraphBuilder g_;
  std::map<std::string, const SiteEncoding*> by_name_;
  std::string cos_, sin_, causal_, neg_inf_;
};

/// "self_attn.q_proj" / "model.layers.N.<site>" for messages about the config.
std::string site_label(ActSite s) { return std::string("activation site '") + to_string(s) + "'"; }
std::string site_label(WeightSite s) { return std::string("weight site '") + to_string(s) + "'"; }

template <class Site>
void check_spec(const QuantSpec& spec, Site s, bool is_weight, const QuantConfig& quant) {
  if (!spec.enabled) return;
  const std::string where = "onnx export: quant config '" + quant.name + "': " + site_label(s);
  MQ_CHECK(spec.bits == 4 || spec.bits == 8 || spec.bits == 16, where, ": ", spec.bits,
           "-bit codes; ONNX Q/DQ holds 4, 8 or 16 bits");
  if (is_weight) {
    MQ_CHECK(spec.granularity != Granularity::kPerGroup, where, ": per_group(", spec.group_size,
             ") weights are not exported (expected per_tensor or per_channel)");
  } else {
    MQ_CHECK(spec.granularity == Granularity::kPerTensor, where, ": ", to_string(spec.granularity),
             " activations are not exported (expected per_tensor)");
  }
}

}  // namespace

void check_onnx_expressible(const QuantConfig& quant) {
  for (const WeightSite s : EnumValues<WeightSite>::values()) check_spec(quant.weight(s), s, true, quant);
  for (const ActSite s : EnumValues<ActSite>::values()) check_spec(quant.act(s), s, false, quant);
}

void check_onnx_model(const ModelConfig& cfg) {
  const auto bad = [](const std::string& what) {
    return make_error("onnx export: ", what, "; the ONNX graph supports the LLaMA family only "
                      "(RMSNorm, SiLU, full rotary, unscaled embeddings)");
  };
  if (cfg.arch != Arch::kLlama) throw bad("architecture '" + std::string(to_string(cfg.arch)) + "'");
  if (cfg.norm != NormKind::kRms) throw bad("a norm other than RMSNorm (x / rms(x) * w)");
  if (cfg.hidden_act != Activation::kSilu) throw bad("an MLP activation other than SiLU");
  if (cfg.rotary_dim() != cfg.head_dim)
    throw bad("partial rotary (rotary_dim " + std::to_string(cfg.rotary_dim()) + " of head_dim " +
              std::to_string(cfg.head_dim) + ")");
  if (cfg.scale_embeddings) throw bad("scaled embeddings");
  MQ_CHECK(cfg.num_attention_heads % cfg.num_key_value_heads == 0, "onnx export: ",
           cfg.num_attention_heads, " heads are no multiple of ", cfg.num_key_value_heads,
           " key/value heads");
}

int64_t onnx_opset_for(const QuantConfig& quant) {
  int64_t opset = 13;
  for (const WeightSite s : EnumValues<WeightSite>::values())
    if (quant.weight(s).enabled && quant.weight(s).bits != 8) opset = 21;
  for (const ActSite s : EnumValues<ActSite>::values())
    if (quant.act(s).enabled && quant.act(s).bits != 8) opset = 21;
  return opset;
}

int64_t onnx_opset_for(const QuantConfig& quant, const EncodingTable& table) {
  int64_t opset = onnx_opset_for(quant);
  for (const SiteEncoding& e : table.entries) {
    if (e.site.is_param || !e.site.spec.enabled) continue;
    opset = std::max(opset, opset_of(act_qdq(e).type));
  }
  return opset;
}

std::string onnx_qdq_model_bytes(const QuantizedModelImpl& qm, const EncodingTable& table,
                                 const OnnxOptions& opts) {
  const QuantConfig& quant = qm.quant_config();
  check_onnx_expressible(quant);
  const ModelConfig& cfg = qm.float_model()->config();
  check_onnx_model(cfg);
  const int64_t needed = onnx_opset_for(quant, table);
  const int64_t opset = opts.opset == 0 ? needed : opts.opset;
  MQ_CHECK(opset == 13 || opset == 21, "onnx export: opset ", opset, " requested, expected 13 or 21");
  MQ_CHECK(opset >= needed, "onnx export: opset ", opset, " requested, but the encodings of '",
           quant.name, "' need opset ", needed, " (uint16/int16 or 4-bit Q/DQ)");
  const int64_t max_pos = opts.max_positions > 0 ? opts.max_positions : cfg.max_position_embeddings;
  MQ_CHECK(max_pos > 0, "onnx export: max_positions ", max_pos, ", expected > 0");

  QdqExporter ex(qm, table, opset);
  onnx::ModelProto m;
  m.ir_version = ir_version_for(opset);
  m.opset_imports = {onnx::OperatorSetId{"", opset}};
  m.producer_name = "mobilequant";
  m.producer_version = opts.producer_version;
  m.doc_string = "MobileQuant QDQ prefill graph, quant config '" + quant.name +
                 "'; input_ids int64 [1, T] (T <= " + std::to_string(max_pos) +
                 "), logits float [1, T, V]";
  m.graph = ex.build(max_pos);
  m.graph.name = "mobilequant_qdq";
  MQ_CHECK(ex.initializer_bytes() < kProtobufLimit, "onnx export: ", ex.initializer_bytes(),
           " bytes of initializers exceed protobuf's 2 GiB limit on one .onnx file (",
           kProtobufLimit, " bytes); external data is not written");
  std::string bytes = m.encode();
  MQ_CHECK(bytes.size() <= kProtobufLimit, "onnx export: the model is ", bytes.size(),
           " bytes, above protobuf's 2 GiB limit (", kProtobufLimit, " bytes)");
  return bytes;
}

}  // namespace mq
