// mobilequant/io/gguf_reader.h
// A reader of GGUF v3 files (llama.cpp's single-file model format), written from the
// format description, without Python: the header, every metadata value type, the tensor
// table and the data section. Tensors come back dequantized to fp32 torch tensors whose
// shape is ggml's `ne` reversed (ggml [ne0 = cols, ne1 = rows] -> torch [rows, cols]).
//
// File layout (all little-endian):
//   "GGUF" u32 version(=3) u64 n_tensors u64 n_kv
//   n_kv x (string key, u32 value_type, value)          string = u64 length + bytes
//   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
//   padding to `general.alignment` (default 32), then the data section; each tensor's
//   offset is relative to the start of the data section.
//
// Every malformed input (wrong magic, other versions, truncation, unknown types, duplicate
// keys, absurd counts or sizes) throws one mq::Error naming the file and what was wrong.
// The file is mapped read-only (POSIX mmap) and read as little-endian, i.e. on a
// little-endian host (x86-64, AArch64).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mobilequant/core/tensor_map.h"

namespace mq {

/// The type tag of a GGUF metadata value (the numbers are the file's).
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

/// Returns the GGUF spelling of a value type ("uint32", "string", "array", ...).
const char* to_string(GgufType type);

/// The storage type of a tensor (ggml_type; the numbers are the file's).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

/// Block geometry of a ggml type: `block_size` elements are stored in `type_size` bytes.
struct GgmlTypeTraits {
  const char* name;    ///< ggml's name, e.g. "Q4_1"
  int64_t block_size;  ///< elements per block
  int64_t type_size;   ///< bytes per block
  bool dequantizable;  ///< this reader can turn it into fp32
};

/// Traits of a known ggml type, or nullptr for a number no ggml version defines.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);

/// One metadata value: a scalar, a string or an array (of scalars, strings or arrays).
struct GgufValue {
  GgufType type = GgufType::kUint8;          ///< the stored type
  GgufType element_type = GgufType::kUint8;  ///< arrays: the type of every element
  uint64_t u = 0;                            ///< unsigned integers and bool (0/1)
  int64_t i = 0;                             ///< signed integers
  double f = 0.0;                            ///< float32/float64
  std::string s;                             ///< string
  std::vector<uint64_t> us;                  ///< array of unsigned integers or bools
  std::vector<int64_t> is;                   ///< array of signed integers
  std::vector<double> fs;                    ///< array of floats
  std::vector<std::string> ss;               ///< array of strings
  std::vector<GgufValue> nested;             ///< array of arrays

  /// Number of elements of an array (0 for scalars).
  size_t array_size() const;
  /// "uint32", "string", "array[string]", ... for messages.
  std::string type_name() const;
};

/// Where one tensor lives in the file and how it is stored.
struct GgufTensorInfo {
  std::string name;         ///< e.g. "blk.0.attn_q.weight"
  std::vector<int64_t> ne;  ///< ggml dims, fastest-varying first (ne[0] = columns)
  GgmlType type = GgmlType::kF32;  ///< storage type
  uint64_t offset = 0;      ///< bytes from the start of the data section
  uint64_t n_bytes = 0;     ///< stored size in bytes
  int64_t n_elements = 0;   ///< product of ne

  /// The torch shape: ne reversed ([ne1, ne0] for a matrix).
  std::vector<int64_t> shape() const;
};

/// An open GGUF v3 file: metadata and tensor table parsed and checked; data read on demand.
class GgufReader {
 public:
  /// Opens and validates `path` (maps it read-only). Throws mq::Error naming the file.
  explicit GgufReader(const std::string& path);
  ~GgufReader();
  GgufReader(const GgufReader&) = delete;
  GgufReader& operator=(const GgufReader&) = delete;

  /// The file name, for messages.
  const std::string& path() const { return path_; }
  /// The format version (always 3 for an open file).
  uint32_t version() const { return version_; }
  /// `general.alignment`, or 32.
  uint64_t alignment() const { return alignment_; }
  /// Byte offset of the data section in the file.
  uint64_t data_offset() const { return data_offset_; }

  /// Every metadata key, in file order.
  const std::vector<std::string>& keys() const { return key_order_; }
  /// Whether `key` is present.
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  /// The value of `key`; throws naming the key and the file if it is absent.
  const GgufValue& value(const std::string& key) const;

  /// Any integer type (uint8..int64) as int64; throws naming key, expected and actual type.
  int64_t get_int(const std::string& key) const;
  /// get_int, or `fallback` when the key is absent (a present key of another type still throws).
  int64_t get_int(const std::string& key, int64_t fallback) const;
  /// float32/float64 as double (integers are accepted too); throws on other types.
  double get_float(const std::string& key) const;
  /// get_float, or `fallback` when the key is absent.
  double get_float(const std::string& key, double fallback) const;
  /// A bool; throws on other types.
  bool get_bool(const std::string& key) const;
  /// get_bool, or `fallback` when the key is absent.
  bool get_bool(const std::string& key, bool fallback) const;
  /// A string; throws on other types.
  const std::string& get_string(const std::string& key) const;
  /// get_string, or `fallback` when the key is absent.
  std::string get_string(const std::string& key, const std::string& fallback) const;
  /// An array of strings; throws on other types.
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  /// An array of any integer type, as int64.
  std::vector<int64_t> get_int_array(const std::string& key) const;
  /// An array of float32/float64, as double.
  std::vector<double> get_float_array(const std::string& key) const;

  /// Every tensor, in file order.
  const std::vector<GgufTensorInfo>& tensor_infos() const { return tensors_; }
  /// Whether a tensor of that name exists.
  bool has_tensor(const std::string& name) const { return tensor_index_.count(name) != 0; }
  /// The info of tensor `name`; throws naming it if it is absent.
  const GgufTensorInfo& tensor_info(const std::string& name) const;
  /// The stored bytes of tensor `name` (inside the mapping, valid while the reader lives).
  const uint8_t* tensor_data(const std::string& name) const;
  /// Tensor `name` dequantized to fp32, shape ne reversed. Throws for types it cannot convert.
  torch::Tensor tensor(const std::string& name) const;
  /// Every tensor, dequantized, by GGUF name.
  TensorMap all_tensors() const;

 private:
  // Parses and checks header, metadata and tensor table; fills every member below.
  void parse();

  std::string path_;
  const uint8_t* data_ = nullptr;  // the whole file, mapped read-only
  uint64_t size_ = 0;              // file size in bytes
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> key_order_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

/// Dequantizes `n_elements` values of ggml type `type` stored at `src` (n_bytes long) into
/// `dst` (fp32), following ggml's block layouts and float arithmetic exactly (the results
/// equal gguf-py's `gguf.quants.dequantize` bit for bit). `what` names the tensor in errors.
void dequantize_ggml(GgmlType type, const uint8_t* src, uint64_t n_bytes, int64_t n_elements,
                     float* dst, const std::string& what);

}  // namespace mq
