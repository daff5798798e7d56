// mobilequant/io/spm_tokenizer.cpp
#include "mobilequant/io/spm_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include "mobilequant/core/error.h"

namespace mq {

SpmTokenizer::SpmTokenizer(const std::string& path, bool adds_bos)
    : path_(path), adds_bos_(adds_bos),
      sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  MQ_CHECK(std::filesystem::is_regular_file(path), "tokenizer '", path, "': no such file");
  const auto status = sp_->Load(path);
  MQ_CHECK(status.ok(), "tokenizer '", path, "': not a SentencePiece model (", status.ToString(),
           ")");
}

SpmTokenizer::~SpmTokenizer() = default;

std::vector<int64_t> SpmTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  MQ_CHECK(status.ok(), "tokenizer '", path_, "': cannot encode text (", status.ToString(), ")");
  return {ids.begin(), ids.end()};
}

std::string SpmTokenizer::decode(const std::vector<int64_t>& ids) const {
  const int64_t n = vocab_size();
  std::vector<int> narrow;
  narrow.reserve(ids.size());
  for (int64_t id : ids) {
    MQ_CHECK(id >= 0 && id < n, "tokenizer '", path_, "': id ", id, " out of range [0, ", n, ")");
    if (sp_->IsControl(static_cast<int>(id))) continue;  // BOS/EOS/pad decode to nothing
    narrow.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = sp_->Decode(narrow, &text);
  MQ_CHECK(status.ok(), "tokenizer '", path_, "': cannot decode (", status.ToString(), ")");
  return text;
}

int64_t SpmTokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int64_t SpmTokenizer::bos_id() const { return sp_->bos_id(); }
int64_t SpmTokenizer::eos_id() const { return sp_->eos_id(); }
int64_t SpmTokenizer::unk_id() const { return sp_->unk_id(); }

}  // namespace mq
