// mobilequant/runtime/safetensors_file.cpp
#include "mobilequant/runtime/safetensors_file.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mobilequant/core/error.h"

namespace mq::rt {
namespace {

DType parse_dtype(const std::string& s, const std::string& path, const std::string& name) {
  static const std::map<std::string, DType> kNames = {
      {"U8", DType::kU8},   {"I8", DType::kI8},   {"U16", DType::kU16}, {"I16", DType::kI16},
      {"I32", DType::kI32}, {"U32", DType::kU32}, {"I64", DType::kI64}, {"F32", DType::kF32}};
  const auto it = kNames.find(s);
  MQ_CHECK(it != kNames.end(), "safetensors '", path, "': tensor '", name, "' has dtype '", s,
           "', expected one of U8, I8, U16, I16, I32, U32, I64, F32");
  return it->second;
}

/// Converts element i of raw little-endian data of dtype `d` to T.
template <typename T>
T load_element(const uint8_t* p, DType d) {
  switch (d) {
    case DType::kU8: return static_cast<T>(p[0]);
    case DType::kI8: return static_cast<T>(static_cast<int8_t>(p[0]));
    case DType::kU16: { uint16_t v; std::memcpy(&v, p, 2); return static_cast<T>(v); }
    case DType::kI16: { int16_t v; std::memcpy(&v, p, 2); return static_cast<T>(v); }
    case DType::kI32: { int32_t v; std::memcpy(&v, p, 4); return static_cast<T>(v); }
    case DType::kU32: { uint32_t v; std::memcpy(&v, p, 4); return static_cast<T>(v); }
    case DType::kI64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<T>(v); }
    case DType::kF32: { float v; std::memcpy(&v, p, 4); return static_cast<T>(v); }
  }
  return T{};
}

}  // namespace

const char* to_string(DType d) {
  switch (d) {
    case DType::kU8: return "U8";
    case DType::kI8: return "I8";
    case DType::kU16: return "U16";
    case DType::kI16: return "I16";
    case DType::kI32: return "I32";
    case DType::kU32: return "U32";
    case DType::kI64: return "I64";
    case DType::kF32: return "F32";
  }
  return "?";
}

int64_t dtype_size(DType d) {
  switch (d) {
    case DType::kU8: case DType::kI8: return 1;
    case DType::kU16: case DType::kI16: return 2;
    case DType::kI32: case DType::kU32: case DType::kF32: return 4;
    case DType::kI64: return 8;
  }
  return 1;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  MQ_CHECK(in.good(), "safetensors '", path, "': cannot open");
  const auto file_size = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  MQ_CHECK(file_size >= 8, "safetensors '", path, "': truncated: ", file_size,
           " bytes, expected at least the 8-byte header length");
  uint8_t len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  MQ_CHECK(header_len <= static_cast<uint64_t>(file_size - 8), "safetensors '", path,
           "': truncated: header length ", header_len, " but only ", file_size - 8,
           " bytes follow");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  MQ_CHECK(in.good(), "safetensors '", path, "': cannot read the header");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    throw make_error("safetensors '", path, "': the header is not JSON: ", e.what());
  }
  MQ_CHECK(j.is_object(), "safetensors '", path, "': the header is not a JSON object");

  SafetensorsFile f;
  f.path_ = path;
  const int64_t data_size = file_size - 8 - static_cast<int64_t>(header_len);
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") continue;
    MQ_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") &&
                 entry.contains("data_offsets"),
             "safetensors '", path, "': tensor '", name,
             "' lacks one of dtype, shape, data_offsets");
    TensorInfo info;
    info.dtype = parse_dtype(entry.at("dtype").get<std::string>(), path, name);
    info.shape = entry.at("shape").get<std::vector<int64_t>>();
    const auto offsets = entry.at("data_offsets").get<std::vector<int64_t>>();
    MQ_CHECK(offsets.size() == 2, "safetensors '", path, "': tensor '", name,
             "': data_offsets has ", offsets.size(), " entries, expected 2");
    info.begin = offsets[0];
    info.end = offsets[1];
    int64_t numel = 1;
    for (int64_t d : info.shape) {
      MQ_CHECK(d >= 0, "safetensors '", path, "': tensor '", name, "' has negative shape ",
               shape_string(info.shape));
      numel *= d;
    }
    MQ_CHECK(info.begin >= 0 && info.end >= info.begin, "safetensors '", path, "': tensor '",
             name, "': bad data_offsets [", info.begin, ", ", info.end, "]");
    MQ_CHECK(info.end - info.begin == numel * dtype_size(info.dtype), "safetensors '", path,
             "': tensor '", name, "': ", info.end - info.begin, " bytes, expected ",
             numel * dtype_size(info.dtype), " for ", to_string(info.dtype), " ",
             shape_string(info.shape));
    MQ_CHECK(info.end <= data_size, "safetensors '", path, "': truncated: tensor '", name,
             "' ends at byte ", info.end, " of the data, but the data has ", data_size,
             " bytes");
    f.tensors_.emplace(name, std::move(info));
  }
  f.data_.resize(static_cast<size_t>(data_size));
  in.read(reinterpret_cast<char*>(f.data_.data()), data_size);
  MQ_CHECK(in.good() || data_size == 0, "safetensors '", path, "': cannot read the data");
  return f;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  MQ_CHECK(it != tensors_.end(), "safetensors '", path_, "': missing tensor '", name, "'");
  return it->second;
}

const TensorInfo& SafetensorsFile::check(const std::string& name,
                                         const std::vector<DType>& dtypes,
                                         const std::vector<int64_t>& shape) const {
  const TensorInfo& ti = info(name);
  bool dtype_ok = false;
  std::string expected;
  for (DType d : dtypes) {
    dtype_ok = dtype_ok || d == ti.dtype;
    expected += (expected.empty() ? "" : " or ") + std::string(to_string(d));
  }
  MQ_CHECK(dtype_ok, "safetensors '", path_, "': tensor '", name, "' has dtype ",
           to_string(ti.dtype), ", expected ", expected);
  MQ_CHECK(ti.shape == shape, "safetensors '", path_, "': tensor '", name, "' has shape ",
           shape_string(ti.shape), ", expected ", shape_string(shape));
  return ti;
}

template <typename T>
std::vector<T> SafetensorsFile::read(const std::string& name, const std::vector<DType>& dtypes,
                                     const std::vector<int64_t>& shape) const {
  const TensorInfo& ti = check(name, dtypes, shape);
  const int64_t size = dtype_size(ti.dtype);
  const int64_t n = (ti.end - ti.begin) / size;
  std::vector<T> out(static_cast<size_t>(n));
  const uint8_t* p = data_.data() + ti.begin;
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = load_element<T>(p + i * size, ti.dtype);
  return out;
}

template std::vector<uint8_t> SafetensorsFile::read<uint8_t>(const std::string&,
                                                             const std::vector<DType>&,
                                                             const std::vector<int64_t>&) const;
template std::vector<int16_t> SafetensorsFile::read<int16_t>(const std::string&,
                                                             const std::vector<DType>&,
                                                             const std::vector<int64_t>&) const;
template std::vector<int32_t> SafetensorsFile::read<int32_t>(const std::string&,
                                                             const std::vector<DType>&,
                                                             const std::vector<int64_t>&) const;
template std::vector<int64_t> SafetensorsFile::read<int64_t>(const std::string&,
                                                             const std::vector<DType>&,
                                                             const std::vector<int64_t>&) const;
template std::vector<float> SafetensorsFile::read<float>(const std::string&,
                                                         const std::vector<DType>&,
                                                         const std::vector<int64_t>&) const;

}  // namespace mq::rt
