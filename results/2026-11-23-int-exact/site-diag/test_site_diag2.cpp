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
#include "tests/export/export_fixture.h"

using namespace mq;

TEST_CASE("diag: per-site agreement on a run", "[.diag2]") {
  const std::string run = std::getenv("MQ_DIAG_MODEL");
  const std::string exp = std::getenv("MQ_DIAG_EXPORT");
  const int64_t T = std::getenv("MQ_DIAG_T") ? std::atoi(std::getenv("MQ_DIAG_T")) : 512;
  LoadedQuantizedModel a = load_quantized_model(run);
  LoadOptions o; o.dtype = torch::kFloat64;
  LoadedQuantizedModel b = load_quantized_model(run, o);
  if (std::getenv("MQ_DIAG_EXPORT_CODES")) b.model->set_export_codes(true);
  const rt::IntModel im = rt::IntModel::load(exp + "/int");
  const auto manifest = test::read_json_file(exp + "/int/manifest.json");
  std::ifstream f("/work/shared/data/tinystories/valid.head.txt");
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
      const auto& e = manifest["activations"][name];
      const double s = e["scale"].get<double>();
      const int64_t z = e["zero_point"].get<int64_t>();
      const int64_t hi = (int64_t{1} << e["bits"].get<int64_t>()) - 1;
      torch::Tensor v = x.detach().to(torch::kFloat64)[0];
      if (v.dim() == 3 && (site == ActSite::kQkBmmIn || site == ActSite::kQkBmmIn2 || site == ActSite::kPvBmmIn2))
        v = v.transpose(0, 1);
      char key[16]; std::snprintf(key, sizeof key, "%02lld ", (long long)layer);
      out[key + split_site_name(site).first + "." + split_site_name(site).second] =
          (torch::round(v / s) + z).clamp(0, hi).to(torch::kInt64).reshape(-1);
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
    char key[16]; std::snprintf(key, sizeof key, "%02lld ", (long long)layer);
    got[key + site] = torch::tensor(codes, torch::kInt32).to(torch::kInt64);
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
