// mobilequant/calib/calibration_data.cpp
// The reference's `get_pile`-style windows (reference-implementation.md §5.1): one token
// stream, offsets from Python's `random` seeded with the reference's seed, windows sliced out.
#include "mobilequant/calib/calibration_data.h"

#include <cstring>

#include "mobilequant/core/error.h"
#include "mobilequant/core/py_random.h"
#include "mobilequant/eval/text_documents.h"

namespace mq {

std::vector<int64_t> calibration_token_ids(const Tokenizer& tokenizer, const std::string& text,
                                           const CalibrationOptions& opts) {
  std::string joined;
  if (opts.separator.empty()) {
    joined = text;
  } else {
    const std::vector<std::string> docs = split_documents(text, opts.separator);
    MQ_CHECK(!docs.empty(), "calibration: no non-empty document between '", opts.separator,
             "' lines");
    for (size_t d = 0; d < docs.size(); ++d) {
      if (d > 0) joined += "\n\n";
      joined += docs[d];
    }
  }
  // The default Hugging Face call: BOS first where the tokenizer adds one (as gptq_token_ids).
  std::vector<int64_t> ids;
  if (tokenizer.adds_bos() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  const std::vector<int64_t> body = tokenizer.encode(joined);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<int64_t> calibration_offsets(int64_t n_ids, const CalibrationOptions& opts,
                                         const std::string& source) {
  MQ_CHECK(opts.seqlen >= 1, "calibration '", source, "': seqlen=", opts.seqlen,
           ", expected >= 1");
  MQ_CHECK(opts.num_samples >= 1, "calibration '", source, "': num_samples=", opts.num_samples,
           ", expected >= 1");
  // randint(0, N - seqlen - 1) needs N - seqlen - 1 >= 0.
  MQ_CHECK(n_ids >= opts.seqlen + 1, "calibration text too short: '", source, "' gives ", n_ids,
           " token ids, expected at least seqlen+1 = ", opts.seqlen + 1, " (seqlen=", opts.seqlen,
           ")");
  PyRandom rng(opts.seed);
  std::vector<int64_t> offsets;
  offsets.reserve(static_cast<size_t>(opts.num_samples));
  for (int64_t s = 0; s < opts.num_samples; ++s) {
    offsets.push_back(rng.randint(0, n_ids - opts.seqlen - 1));
  }
  return offsets;
}

torch::Tensor calibration_windows(const std::vector<int64_t>& ids, const CalibrationOptions& opts,
                                  const std::string& source) {
  const auto offsets = calibration_offsets(static_cast<int64_t>(ids.size()), opts, source);
  auto windows = torch::empty({opts.num_samples, opts.seqlen}, torch::kInt64);  // [N, T]
  int64_t* out = windows.data_ptr<int64_t>();
  for (size_t s = 0; s < offsets.size(); ++s) {
    // ids[i : i + seqlen]; the offsets keep i + seqlen <= N - 1.
    std::memcpy(out + static_cast<int64_t>(s) * opts.seqlen, ids.data() + offsets[s],
                static_cast<size_t>(opts.seqlen) * sizeof(int64_t));
  }
  return windows;
}

}  // namespace mq
