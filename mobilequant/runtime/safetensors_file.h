// mobilequant/runtime/safetensors_file.h
// A minimal, torch-free reader of one .safetensors file for the integer runtime: an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} (a
// "__metadata__" entry is allowed and ignored), then the raw little-endian data. The whole
// file is read into memory at open; typed accessors copy one tensor out after checking its
// dtype and shape. Every error names the file and the tensor, with expected and actual values.
// Not a writer, and no float16/bfloat16 (the integer model has none).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mq::rt {

/// The element types the reader understands (safetensors dtype strings U8 … F32).
enum class DType { kU8, kI8, kU16, kI16, kI32, kU32, kI64, kF32 };

/// The safetensors name of a dtype ("U8", "I32", …).
const char* to_string(DType d);

/// Bytes per element of a dtype.
int64_t dtype_size(DType d);

/// One tensor's entry of the header.
struct TensorInfo {
  DType dtype = DType::kU8;      ///< element type
  std::vector<int64_t> shape;    ///< dimensions (empty: a scalar)
  int64_t begin = 0;             ///< byte offset of the data, from the start of the data block
  int64_t end = 0;               ///< one past the last byte
};

/// Formats a shape as "[2, 3]" for messages.
std::string shape_string(const std::vector<int64_t>& shape);

/// A .safetensors file read fully into memory.
class SafetensorsFile {
 public:
  /// Reads and validates `path` (header length, JSON, dtypes, offsets inside the file, byte
  /// counts that match dtype x shape); throws mq::Error naming the file and what is wrong.
  static SafetensorsFile open(const std::string& path);

  /// The file this was read from.
  const std::string& path() const { return path_; }
  /// Whether a tensor of that name exists.
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  /// Every tensor's header entry, by name.
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  /// The header entry of `name`; throws naming the file and the tensor when it is missing.
  const TensorInfo& info(const std::string& name) const;

  /// Copies tensor `name` out as T after checking that its dtype is one of `dtypes` and its
  /// shape equals `shape`; throws naming file, tensor, expected and actual otherwise.
  template <typename T>
  std::vector<T> read(const std::string& name, const std::vector<DType>& dtypes,
                      const std::vector<int64_t>& shape) const;

 private:
  /// Checks dtype and shape of `name` against the expectation and returns its entry.
  const TensorInfo& check(const std::string& name, const std::vector<DType>& dtypes,
                          const std::vector<int64_t>& shape) const;

  std::string path_;
  std::map<std::string, TensorInfo> tensors_;
  std::vector<uint8_t> data_;  // [bytes] the data block after the header
};

}  // namespace mq::rt
