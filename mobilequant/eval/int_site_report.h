// mobilequant/eval/int_site_report.h
// `mobilequant eval --runtime int --sites`: where the integer runtime first departs from the
// simulation. One window goes through the simulated model (with an activation observer) and
// through the integer runtime (with its site tap); at every activation site of every block the
// simulation's values are turned into the integer model's codes (clamp(round(x / s) + z, 0,
// 2^b - 1), the manifest's encoding) and compared with the runtime's codes. The runtime's
// order of sites is the order of computation, so the first site that differs is where the two
// part; every later difference may be its consequence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/runtime/int_model.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// One activation site of one block: the runtime's codes against the simulation's.
struct SiteAgreement {
  int64_t layer = 0;         ///< block
  std::string site;          ///< "mlp.w2.output", as the runtime names it
  int64_t codes = 0;         ///< codes compared (the causal entries of [H, T, T] sites)
  int64_t equal = 0;         ///< of which equal
  int64_t max_diff = 0;      ///< largest |runtime - simulation| in codes
  int64_t first_token = -1;  ///< the token (query row) of the first differing code; -1: none
  bool compared = true;      ///< false: an [H, T, T] site left out (T above the limit)
};

/// Runs `tokens` (ids of one window, T of them) through `sim` (as it is set up: dtype, export
/// codes) and through `im`, and compares every block activation site that the manifest's
/// `activations` object (name -> {bits, scale, zero_point}) encodes. The [H, T, T] sites
/// (scores, probabilities) are compared only when T <= max_square_tokens (they take
/// 8 H T^2 bytes a block). Returns the sites in the runtime's order of computation.
std::vector<SiteAgreement> compare_int_sites(QuantizedModelImpl& sim, const rt::IntModel& im,
                                             const nlohmann::json& activations,
                                             const std::vector<int32_t>& tokens, int threads,
                                             int64_t max_square_tokens = 512);

/// Markdown: the first site that differs (or that none does), then a table of every site that
/// differs, at most `rows` of them, with the count of the others.
std::string site_report_markdown(const std::vector<SiteAgreement>& sites, int64_t rows = 40);

}  // namespace mq
