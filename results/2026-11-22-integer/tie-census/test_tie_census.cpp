// SCRATCH: tie census at activation sites (not committed).
#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include "mobilequant/config/quant_sites.h"
#include "mobilequant/transforms/quantized_checkpoint.h"
#include "mobilequant/transforms/quantized_model.h"

using namespace mq;

TEST_CASE("tie census", "[.diag]") {
  const char* dir = std::getenv("MQ_DIAG_MODEL");
  REQUIRE(dir != nullptr);
  LoadOptions o;
  const char* dt = std::getenv("MQ_DIAG_DTYPE");
  if (dt && std::string(dt) == "fp64") o.dtype = torch::kFloat64;
  LoadedQuantizedModel lm = load_quantized_model(dir, o);
  TensorMap qs = lm.model->quant_state();
  std::ifstream f("/work/shared/data/wikitext2/wiki.test.raw.txt");
  std::stringstream ss; ss << f.rdbuf();
  std::string text = ss.str().substr(0, 20000);
  std::vector<int64_t> ids = lm.base.tokenizer->encode(text);
  const int64_t T = std::min<int64_t>(ids.size(), std::getenv("MQ_DIAG_T") ? std::atoi(std::getenv("MQ_DIAG_T")) : 512);
  ids.resize(T);
  struct C { double n = 0, t6 = 0, t4 = 0, t2 = 0, exact = 0; };
  std::map<std::string, C> per_site;
  lm.model->set_observer([&](int64_t layer, ActSite site, const torch::Tensor& x) {
    const std::string q = qualified_site_name(layer, site) + "_quantizer.scale";
    auto it = qs.find(q);
    if (it == qs.end()) return;
    torch::Tensor r = x.detach().to(torch::kFloat64) / it->second.to(torch::kFloat64);
    torch::Tensor d = (r - torch::floor(r) - 0.5).abs();
    C& c = per_site[to_string(site)];
    c.n += r.numel();
    c.exact += (d == 0).sum().item<double>();
    c.t6 += (d < 1e-6).sum().item<double>();
    c.t4 += (d < 1e-4).sum().item<double>();
    c.t2 += (d < 1e-2).sum().item<double>();
  });
  torch::NoGradGuard ng;
  auto input = torch::tensor(ids).unsqueeze(0);
  lm.model->forward(input);
  std::printf("%-34s %12s %10s %10s %10s %10s\n", "site", "elements", "exact", "<1e-6", "<1e-4", "<1e-2");
  for (auto& [k, c] : per_site)
    std::printf("%-34s %12.0f %10.2e %10.2e %10.2e %10.2e\n", k.c_str(), c.n, c.exact / c.n, c.t6 / c.n, c.t4 / c.n, c.t2 / c.n);
  std::printf("uniform expectation: <1e-6: 2e-6, <1e-4: 2e-4, <1e-2: 2e-2\n");
}
