// mobilequant/eval/int_site_report.cpp
#include "mobilequant/eval/int_site_report.h"

#include <cmath>
#include <map>
#include <sstream>

#include "mobilequant/config/quant_sites.h"
#include "mobilequant/core/error.h"
#include "mobilequant/runtime/int_prefill.h"

namespace mq {

namespace {

std::string site_key(int64_t layer, const std::string& site) {
  return std::to_string(layer) + " " + site;
}

/// The runtime's name of a block site ("self_attn.q_proj.output").
std::string runtime_site_name(ActSite site) {
  const auto [module, field] = split_site_name(site);
  return module + "." + field;
}

bool is_square_site(ActSite site) { return site == ActSite::kQkBmmOut || site == ActSite::kPvBmmIn; }

bool is_square_site(const std::string& site) {
  return site == runtime_site_name(ActSite::kQkBmmOut) ||
         site == runtime_site_name(ActSite::kPvBmmIn);
}

}  // namespace

std::vector<SiteAgreement> compare_int_sites(QuantizedModelImpl& sim, const rt::IntModel& im,
                                             const nlohmann::json& activations,
                                             const std::vector<int32_t>& tokens, int threads,
                                             int64_t max_square_tokens) {
  const auto t = static_cast<int64_t>(tokens.size());
  MQ_CHECK(t >= 1, "eval --sites: an empty window");
  const bool square = t <= max_square_tokens;
  // The simulation's codes per site, flattened in the runtime's layout.
  std::map<std::string, torch::Tensor> want;  // each [n] int32
  sim.set_observer([&](int64_t layer, ActSite site, const torch::Tensor& x) {
    if (layer < 0 || (is_square_site(site) && !square)) return;
    const std::string name = qualified_site_name(layer, site);
    if (!activations.contains(name)) return;
    const nlohmann::json& e = activations[name];
    const double s = e.at("scale").get<double>();
    const auto z = e.at("zero_point").get<int64_t>();
    const double hi = std::ldexp(1.0, e.at("bits").get<int>()) - 1.0;
    torch::Tensor v = x.detach().to(torch::kCPU, torch::kFloat64)[0];  // [T, N] or [H, T, D]
    // q, k, v before the attention products are [H, T, D] here and [T, H, D] in the runtime.
    if (v.dim() == 3 && !is_square_site(site)) v = v.transpose(0, 1);
    want[site_key(layer, runtime_site_name(site))] =
        (torch::round(v / s) + static_cast<double>(z)).clamp(0.0, hi).to(torch::kInt32).reshape(-1);
  });
  {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    sim.forward(torch::tensor(ids, torch::kInt64).unsqueeze(0));  // [1, T, V]
  }
  sim.set_observer(nullptr);

  const torch::Tensor causal = torch::ones({t, t}, torch::kBool).tril();  // [T, T]
  std::vector<SiteAgreement> out;
  rt::PrefillOptions opts;
  opts.threads = threads;
  opts.observer = [&](int64_t layer, const std::string& site, const std::vector<int32_t>& codes,
                      const std::vector<int64_t>&) {
    if (layer < 0 || site == "residual") return;
    if (!activations.contains("model.layers." + std::to_string(layer) + "." + site)) return;
    SiteAgreement a;
    a.layer = layer;
    a.site = site;
    if (is_square_site(site) && !square) {
      a.compared = false;
      out.push_back(a);
      return;
    }
    const auto it = want.find(site_key(layer, site));
    MQ_CHECK(it != want.end(), "eval --sites: the simulation never reached block ", layer, " ",
             site, " (a site the runtime computes)");
    torch::Tensor got = torch::from_blob(const_cast<int32_t*>(codes.data()),
                                         {static_cast<int64_t>(codes.size())}, torch::kInt32);
    torch::Tensor ref = it->second;
    MQ_CHECK(got.numel() == ref.numel(), "eval --sites: block ", layer, " ", site, ": ",
             got.numel(), " codes from the runtime, ", ref.numel(), " from the simulation");
    torch::Tensor keep;  // [n] bool: the entries compared
    if (is_square_site(site)) keep = causal.reshape(-1).repeat({got.numel() / (t * t)});
    const torch::Tensor g = keep.defined() ? got.masked_select(keep) : got;
    const torch::Tensor r = keep.defined() ? ref.masked_select(keep) : ref;
    const torch::Tensor diff = (g.to(torch::kInt64) - r.to(torch::kInt64)).abs();  // [n]
    a.codes = diff.numel();
    const torch::Tensor differs = diff.ne(0);
    a.equal = a.codes - differs.sum().item<int64_t>();
    a.max_diff = a.codes > 0 ? diff.max().item<int64_t>() : 0;
    if (a.equal < a.codes) {
      // The first differing entry, mapped back to its token (row of the full layout).
      const torch::Tensor full = keep.defined()
                                     ? torch::zeros_like(got, torch::kBool).masked_scatter(keep, differs)
                                     : differs;
      const int64_t first = full.nonzero()[0][0].item<int64_t>();
      a.first_token = is_square_site(site) ? (first / t) % t : first / (got.numel() / t);
    }
    out.push_back(a);
  };
  rt::prefill(im, tokens, opts);
  return out;
}

std::string site_report_markdown(const std::vector<SiteAgreement>& sites, int64_t rows) {
  std::ostringstream os;
  int64_t differing = 0, skipped = 0;
  const SiteAgreement* first = nullptr;
  for (const SiteAgreement& s : sites) {
    if (!s.compared) ++skipped;
    if (s.compared && s.equal < s.codes) {
      ++differing;
      if (first == nullptr) first = &s;
    }
  }
  os << "Sites compared: " << sites.size() - static_cast<size_t>(skipped);
  if (skipped > 0) os << " (" << skipped << " [H, T, T] sites left out: window above the limit)";
  os << ".\n";
  if (first == nullptr) {
    os << "Every code of every compared site equals the simulation's.\n";
    return os.str();
  }
  os << "First difference: block " << first->layer << " " << first->site << ", "
     << first->codes - first->equal << " of " << first->codes << " codes (max |diff| "
     << first->max_diff << "), first at token " << first->first_token << ". " << differing
     << " sites differ.\n\n"
     << "| block | site | codes | differing | max diff | first token |\n"
     << "|---:|---|---:|---:|---:|---:|\n";
  int64_t shown = 0;
  for (const SiteAgreement& s : sites) {
    if (!s.compared || s.equal == s.codes) continue;
    if (shown++ == rows) break;
    os << "| " << s.layer << " | " << s.site << " | " << s.codes << " | " << s.codes - s.equal
       << " | " << s.max_diff << " | " << s.first_token << " |\n";
  }
  if (differing > rows) os << "\n(" << differing - rows << " more sites differ)\n";
  return os.str();
}

}  // namespace mq
