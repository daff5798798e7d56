// mobilequant/io/safetensors_reader.h
// Reading and writing the safetensors format: an 8-byte little-endian header
// length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets"}, ...,
// "__metadata__": {...}}), then the raw little-endian tensor bytes, offsets
// relative to the end of the header. Every inconsistency (header past the end
// of the file, malformed JSON, unknown dtype, offsets outside the data section or
// disagreeing with shape * dtype size, overlapping tensors) is an mq::Error that
// names the file and the tensor. This file knows nothing about models.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "mobilequant/core/tensor_map.h"

namespace mq {

/// One tensor as the header describes it.
struct SafetensorsEntry {
  std::string dtype;           ///< safetensors dtype name ("F32", "BF16", ...)
  std::vector<int64_t> shape;  ///< dimensions
  int64_t begin = 0;           ///< first byte, relative to the data section
  int64_t end = 0;             ///< one past the last byte, relative to the data section
};

/// A parsed and validated header.
struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;  ///< by name
  std::map<std::string, std::string> metadata;      ///< "__metadata__" (string values only)
  int64_t data_offset = 0;                          ///< file offset of the data section
  int64_t data_size = 0;                            ///< bytes in the data section
};

/// Reads and validates the header of `path` without touching the tensor data.
SafetensorsHeader read_safetensors_header(const std::string& path);

/// Reads every tensor of `path`. Floating dtypes (F64/F32/F16/BF16/F8) become fp32 unless
/// `keep_dtype`; integer and BOOL tensors always keep their dtype.
TensorMap read_safetensors(const std::string& path, bool keep_dtype = false);

/// Writes `tensors` (any device, contiguous or not) to `path` with `metadata` as
/// "__metadata__". Atomic: the file is written beside `path` and renamed over it.
void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace mq
