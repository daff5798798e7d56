// Throwaway diagnostic (not committed): per-site code agreement on a saved run + its int export.
#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include "mobilequant/config/quant_sites.h"
#include "mobilequant/runtime/int_model.h"
#include "mobilequant/runtime/int_prefill.h"
#include "mobilequant/transforms/quantized_checkpoint.h"
#include "mobilequant/transforms/quantized_model.h"
#include "mobilequant/export/export_reader.h"
#include "mobilequant/export/int_model.h"
#include "tests/export/export_fixture.h"

using namespace mq;

TEST_CASE("diag: per-site agreement on an export", "[.diag3]") {
  const std::string run = std::getenv("MQ_DIAG_MODEL") ? std::getenv("MQ_DIAG_MODEL") : "";
  const std::string exp = std::getenv("MQ_DIAG_EXPORT");
  const int64_t T = std::getenv("MQ_DIAG_T") ? std::atoi(std::getenv("MQ_DIAG_T")) : 512;
  (void)run;
  LoadedExport a = load_export(exp);
  LoadOptions o; o.dtype = torch::kFloat64;
  LoadedExport b = load_export(exp, o);
  if (std::getenv("MQ_DIAG_EXPORT_CODES")) b.model->set_export_codes(true);
  const rt::IntModel im = rt::IntModel::load(exp + "/int");
  const auto manifest = test::read_json_file(exp + "/int/manifest.json");
  std::ifstream f(std::getenv("MQ_DIAG_TEXT") ? std::getenv("MQ_DIAG_TEXT") : "/work/shared/data/tinystories/valid.head.txt");
  std::stringstream ss; ss << f.rdbuf();
  std::string text = ss.str();
  {
    int doc = std::getenv("MQ_DIAG_DOC") ? std::atoi(std::getenv("MQ_DIAG_DOC")) : 0;
    size_t pos = 0;
    for (int i = 0; i < doc; ++i) pos = text.find("<|endoftext|>", pos) + 13;
    text = text.substr(pos, text.find("<|endoftext|>", pos) - pos);
    while (!text.empty() && (text[0] == '\n' || text[0] == ' ')) text.erase(0, 1);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  }
  std::vector<int64_t> ids = a.base.tokenizer->encode(text);
  ids.insert(ids.begin(), 1);
  if ((int64_t)ids.size() > T) ids.resize(T);
  const int64_t t = ids.size();
  std::vector<int32_t> prompt(ids.begin(), ids.end());
  using Codes = std::map<std::string, torch::Tensor>;
  auto observe = [&](QuantizedModel& qm, Codes& out) {
    qm->set_observer([&, qmp = &qm](int64_t layer, ActSite site, const torch::Tensor& x) {
      if (!(*qmp)->quant_config().act(site).enabled) return;
      const std::string name = qualified_site_name(layer, site);
      if (!manifest["activations"].contains(name)) return;
      if (std::getenv("MQ_DIAG_SKIP_TT") && (site == ActSite::kQkBmmOut || site == ActSite::kPvBmmIn)) return;
      const auto& e = manifest["activations"][name];
      const double s = e["scale"].get<double>();
      const int64_t z = e["zero_point"].get<int64_t>();
      const int64_t hi = (int64_t{1} << e["bits"].get<int64_t>()) - 1;
      torch::Tensor v = x.detach().to(torch::kFloat64)[0];
      if (v.dim() == 3 && (site == ActSite::kQkBmmIn || site == ActSite::kQkBmmIn2 || site == ActSite::kPvBmmIn2))
        v = v.transpose(0, 1);
      char key[16]; std::snprintf(key, sizeof key, "%02lld ", (long long)layer);
      out[key + split_site_name(site).first + "." + split_site_name(site).second] =
          (torch::round(v / s) + z).clamp(0, hi).to(torch::kInt32).reshape(-1);
    });
  };
  torch::NoGradGuard ng;
  Codes s32, s64, got;
  const auto in = torch::tensor(ids).unsqueeze(0);
  observe(a.model, s32);
  const torch::Tensor l32 = a.model->forward(in)[0].to(torch::kFloat64);
  observe(b.model, s64);
  const torch::Tensor l64 = b.model->forward(in)[0].to(torch::kFloat64);
  rt::PrefillOptions opts;
  opts.observer = [&](int64_t layer, const std::string& site, const std::vector<int32_t>& codes,
                      const std::vector<int64_t>&) {
    if (site == "residual" || layer < 0) return;
    if (std::getenv("MQ_DIAG_SKIP_TT") && (site == "self_attn.qk_bmm.output" || site == "self_attn.pv_bmm.input")) return;
    char key[16]; std::snprintf(key, sizeof key, "%02lld ", (long long)layer);
    got[key + site] = torch::tensor(codes, torch::kInt32);
  };
  std::vector<float> out = rt::prefill(im, prompt, opts);
  const int64_t V = l32.size(-1);
  const torch::Tensor li = torch::from_blob(out.data(), {t, V}, torch::kFloat32).to(torch::kFloat64);
  std::cout << "T " << t << " argmax int==sim32 " << li.argmax(-1).eq(l32.argmax(-1)).to(torch::kFloat64).mean().item<double>()
            << "  sim64==sim32 " << l64.argmax(-1).eq(l32.argmax(-1)).to(torch::kFloat64).mean().item<double>()
            << "  int==sim64 " << li.argmax(-1).eq(l64.argmax(-1)).to(torch::kFloat64).mean().item<double>() << "\n";
  if (const char* dump = std::getenv("MQ_DIAG_DUMP")) {
    const std::string L = dump;
    auto a = got[L + " mlp.act_fn.input2"], b = s32[L + " mlp.act_fn.input2"];
    auto gi = got[L + " mlp.w1.output"], gs = s32[L + " mlp.w1.output"];
    auto idx = a.ne(b).nonzero().reshape(-1);
    for (int64_t i = 0; i < std::min<int64_t>(idx.numel(), 20); ++i) {
      const int64_t k = idx[i].item<int64_t>();
      std::printf("elem %lld: w1 int %lld sim %lld | sig int %lld sim %lld\n", (long long)k,
                  (long long)gi[k].item<int64_t>(), (long long)gs[k].item<int64_t>(),
                  (long long)a[k].item<int64_t>(), (long long)b[k].item<int64_t>());
    }
    const std::string nm = "model.layers." + std::to_string(std::atoi(L.c_str())) + ".";
    for (const char* x : {"mlp.w1.output", "mlp.act_fn.input2", "mlp.act_fn.output"})
      std::cout << x << " " << manifest["activations"][nm + x].dump() << "\n";
  }
  if (const char* ds = std::getenv("MQ_DIAG_SITE")) {
    const std::string key = ds;
    auto a = got[key], b = s64[key], c = s32[key];
    const int64_t width = a.numel() / t;
    auto idx = a.ne(b).nonzero().reshape(-1);
    std::printf("site %s width %lld mismatches %lld\n", key.c_str(), (long long)width, (long long)idx.numel());
    for (int64_t i = 0; i < std::min<int64_t>(idx.numel(), 40); ++i) {
      const int64_t k = idx[i].item<int64_t>();
      std::printf("  tok %lld ch %lld: int %lld fp64 %lld fp32 %lld\n", (long long)(k / width), (long long)(k % width),
                  (long long)a[k].item<int64_t>(), (long long)b[k].item<int64_t>(), (long long)c[k].item<int64_t>());
    }
    const std::string nm = "model.layers." + std::to_string(std::atoi(key.c_str())) + "." + key.substr(3);
    std::cout << manifest["activations"][nm].dump() << "\n";
  }
  if (std::getenv("MQ_DIAG_PV")) {
    const std::string L = std::getenv("MQ_DIAG_PV");
    auto v = got[L + " self_attn.pv_bmm.input2"], v64 = s64[L + " self_attn.pv_bmm.input2"];
    auto pi = got[L + " self_attn.pv_bmm.input"], p64 = s64[L + " self_attn.pv_bmm.input"];
    auto o = got[L + " self_attn.pv_bmm.output"], o64 = s64[L + " self_attn.pv_bmm.output"];
    std::printf("v numel %lld p numel %lld o numel %lld\n", (long long)v.numel(), (long long)pi.numel(), (long long)o.numel());
    for (int d = 0; d < 16; ++d)
      std::printf("d %d: v int %lld v64 %lld | o int %lld o64 %lld\n", d, (long long)v[d].item<int64_t>(), (long long)v64[d].item<int64_t>(), (long long)o[d].item<int64_t>(), (long long)o64[d].item<int64_t>());
    {
      auto q = b.model->layer(std::atoi(L.c_str()))->act_quantizers[static_cast<size_t>(ActSite::kPvBmmIn)];
      std::cout << "sim pv_bmm.input scale " << q->scale << " offset " << q->offset << " qmin " << q->options.spec().qmin() << " qmax " << q->options.spec().qmax() << " sym " << q->options.spec().symmetric << "\n";
      std::cout << "q(1.0)=" << q(torch::tensor({1.0, 0.5, 0.3}, torch::kFloat64)) << "\n";
    }
    std::printf("p[0] int %lld p64 %lld; p[1] int %lld p64 %lld\n", (long long)pi[0].item<int64_t>(), (long long)p64[0].item<int64_t>(), (long long)pi[1].item<int64_t>(), (long long)p64[1].item<int64_t>());
  }
  if (const char* tie = std::getenv("MQ_DIAG_TIE")) {
    // For mlp.w2 of block L: every output code that differs between the runtime and fp64
    // although the input codes agree: the exact value, the runtime's fixed-point value.
    const int L = std::atoi(tie);
    char key[16]; std::snprintf(key, sizeof key, "%02d ", L);
    const std::string in = std::string(key) + "mlp.w2.input", outs = std::string(key) + "mlp.w2.output";
    REQUIRE(got[in].equal(s64[in]));
    const auto& wq = a.model->layer(L)->weight_quantizers[static_cast<size_t>(WeightSite::kDown)];
    torch::Tensor w = weight_of(a.base.model->layer(L)->weights(), WeightSite::kDown).detach().to(torch::kFloat32);
    auto [p, codes] = wq->export_codes(w);
    const std::string nm = "model.layers." + std::to_string(L) + ".";
    const auto& ei = manifest["activations"][nm + "mlp.w2.input"];
    const auto& eo = manifest["activations"][nm + "mlp.w2.output"];
    const double s_in = ei["scale"].get<double>(), s_out = eo["scale"].get<double>();
    const int64_t z_in = ei["zero_point"].get<int64_t>(), z_out = eo["zero_point"].get<int64_t>();
    const int64_t F = codes.size(1), C = codes.size(0);
    torch::Tensor xin = got[in].to(torch::kInt64).reshape({t, F}) - z_in;                 // [T, F]
    torch::Tensor wc = codes.to(torch::kInt64) - p.offset.to(torch::kInt64).reshape({C, 1});  // [C, F]
    torch::Tensor sw = p.scale.to(torch::kFloat64).reshape({C});
    auto g = got[outs], e = s64[outs];
    auto idx = g.ne(e).nonzero().reshape(-1);
    for (int64_t i = 0; i < idx.numel(); ++i) {
      const int64_t k = idx[i].item<int64_t>(), tok = k / C, ch = k % C;
      const int64_t acc = (xin[tok] * wc[ch]).sum().item<int64_t>();
      const double m = s_in * sw[ch].item<double>() / s_out;
      const FixedPoint fp = to_fixed_point(m, "diag");
      const long double exact = (long double)acc * (long double)s_in * (long double)sw[ch].item<double>() / (long double)s_out;
      const long double fixed = (long double)acc * (long double)fp.multiplier / std::ldexp((long double)1, fp.shift);
      std::printf("tok %lld ch %lld: int %lld fp64 %lld | acc %lld exact %.12Lf fixed %.12Lf | exact-tie %.3Le, rel err of M %.3Le\n",
                  (long long)tok, (long long)ch, (long long)g[k].item<int64_t>(), (long long)e[k].item<int64_t>(), (long long)acc,
                  exact + z_out, fixed + z_out, exact - (std::floor(exact) + 0.5L), (long double)fp.multiplier / std::ldexp((long double)1, fp.shift) / (long double)m - 1);
    }
  }
  const torch::Tensor causal = torch::ones({t, t}, torch::kBool).tril().reshape(-1);
  for (const auto& [site, w] : s32) {
    if (!got.count(site) || !s64.count(site)) { std::cout << site << " missing\n"; continue; }
    torch::Tensor g = got[site], x = w, y = s64[site];
    if (g.numel() != x.numel()) { std::cout << site << " size " << g.numel() << " vs " << x.numel() << "\n"; continue; }
    if (site.find("qk_bmm.output") != std::string::npos) {
      const auto mask = causal.repeat({g.numel() / (t * t)});
      g = g.masked_select(mask); x = x.masked_select(mask); y = y.masked_select(mask);
    }
    std::printf("%-40s int==32 %.5f (max %3lld)  64==32 %.5f (max %3lld)  int==64 %.5f (max %3lld)\n", site.c_str(),
                g.eq(x).to(torch::kFloat64).mean().item<double>(), (long long)(g - x).abs().max().item<int64_t>(),
                y.eq(x).to(torch::kFloat64).mean().item<double>(), (long long)(y - x).abs().max().item<int64_t>(),
                g.eq(y).to(torch::kFloat64).mean().item<double>(), (long long)(g - y).abs().max().item<int64_t>());
  }
}
