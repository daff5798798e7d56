// mobilequant/models/generation.h
// Greedy (temperature 0) generation, used to check a model end to end (stories260K
// must reproduce llama2.c's text) and by `mobilequant generate`. No KV cache: each
// step re-runs the prefix, which is plenty for checks and short samples.
#pragma once

#include <cstdint>
#include <vector>

#include "mobilequant/models/decoder.h"

namespace mq {

/// Extends `prompt` (ids, BOS included if wanted) by up to `max_new_tokens` argmax tokens,
/// stopping after `stop_id` (if >= 0) or at the model's context length. Returns the new ids.
std::vector<int64_t> generate_greedy(CausalLm& model, const std::vector<int64_t>& prompt,
                                     int64_t max_new_tokens, int64_t stop_id = -1);

}  // namespace mq
