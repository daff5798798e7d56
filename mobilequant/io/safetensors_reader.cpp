// mobilequant/io/safetensors_reader.cpp
// The safetensors reader/writer. The host is assumed little-endian (checked at run time),
// so tensor bytes are read straight into tensor storage.
#include "mobilequant/io/safetensors_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "mobilequant/core/error.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

/// A safetensors dtype name and its LibTorch equivalent.
struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t size;  // bytes per element
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8},          {"F32", torch::kFloat32, 4},
    {"F16", torch::kFloat16, 2},          {"BF16", torch::kBFloat16, 2},
    {"F8_E4M3", torch::kFloat8_e4m3fn, 1}, {"F8_E5M2", torch::kFloat8_e5m2, 1},
    {"I64", torch::kInt64, 8},            {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},            {"I8", torch::kInt8, 1},
    {"U8", torch::kUInt8, 1},             {"BOOL", torch::kBool, 1},
    {"U16", torch::kUInt16, 2},           {"U32", torch::kUInt32, 4},
};

/// The comma-separated list of supported dtype names, for messages.
std::string dtype_names() {
  std::string out;
  for (const auto& d : kDtypes) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* find_dtype(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// Reads a non-negative JSON integer `v` (a shape entry or an offset) or throws.
int64_t non_negative(const nlohmann::json& v, const std::string& path, const std::string& name,
                     const char* field) {
  MQ_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, "safetensors '", path, "': tensor '",
           name, "': ", field, " must hold non-negative integers, found ", v.dump());
  return v.get<int64_t>();
}

/// Parses one header entry {"dtype", "shape", "data_offsets"}.
SafetensorsEntry parse_entry(const nlohmann::json& j, const std::string& path,
                             const std::string& name) {
  const std::string where = "safetensors '" + path + "': tensor '" + name + "'";
  MQ_CHECK(j.is_object(), where, ": expected an object {dtype, shape, data_offsets}, found ",
           j.dump());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    MQ_CHECK(j.contains(key), where, ": missing '", key, "' in ", j.dump());
  SafetensorsEntry e;
  MQ_CHECK(j["dtype"].is_string(), where, ": 'dtype' must be a string, found ", j["dtype"].dump());
  e.dtype = j["dtype"].get<std::string>();
  const DtypeInfo* info = find_dtype(e.dtype);
  MQ_CHECK(info != nullptr, where, ": unknown dtype '", e.dtype, "', expected one of [",
           dtype_names(), "]");
  MQ_CHECK(j["shape"].is_array(), where, ": 'shape' must be an array, found ", j["shape"].dump());
  int64_t numel = 1;
  for (const auto& d : j["shape"]) {
    const int64_t dim = non_negative(d, path, name, "shape");
    MQ_CHECK(dim == 0 || numel <= std::numeric_limits<int64_t>::max() / info->size / dim, where,
             ": shape ", j["shape"].dump(), " is too large");
    numel *= dim;
    e.shape.push_back(dim);
  }
  const auto& off = j["data_offsets"];
  MQ_CHECK(off.is_array() && off.size() == 2, where,
           ": 'data_offsets' must be [begin, end], found ", off.dump());
  e.begin = non_negative(off[0], path, name, "data_offsets");
  e.end = non_negative(off[1], path, name, "data_offsets");
  MQ_CHECK(e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end,
           "] end before they begin");
  MQ_CHECK(e.end - e.begin == numel * info->size, where, ": data_offsets [", e.begin, ", ",
           e.end, "] span ", e.end - e.begin, " bytes, but shape ", j["shape"].dump(), " of ",
           e.dtype, " needs ", numel * info->size, " bytes");
  return e;
}

}  // namespace

SafetensorsHeader read_safetensors_header(const std::string& path) {
  MQ_CHECK(fs::is_regular_file(path), "safetensors '", path, "': no such file");
  const int64_t file_size = static_cast<int64_t>(fs::file_size(path));
  MQ_CHECK(file_size >= 8, "safetensors '", path, "': truncated: ", file_size,
           " bytes, expected at least the 8-byte header length");
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in, "safetensors '", path, "': cannot open for reading");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  MQ_CHECK(in, "safetensors '", path, "': cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];  // little-endian
  MQ_CHECK(header_len <= static_cast<uint64_t>(file_size - 8), "safetensors '", path,
           "': header length ", header_len, " runs past the end of the file (",
           file_size, " bytes: truncated or not a safetensors file?)");
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  MQ_CHECK(in, "safetensors '", path, "': cannot read the ", header_len, "-byte header");

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw make_error("safetensors '", path, "': malformed JSON header: ", e.what());
  }
  MQ_CHECK(j.is_object(), "safetensors '", path, "': the JSON header must be an object, found ",
           j.type_name());

  SafetensorsHeader h;
  h.data_offset = 8 + static_cast<int64_t>(header_len);
  h.data_size = file_size - h.data_offset;
  for (const auto& item : j.items()) {
    if (item.key() == "__metadata__") {
      if (!item.value().is_object()) continue;  // ignored, as every reader does
      for (const auto& m : item.value().items())
        if (m.value().is_string()) h.metadata[m.key()] = m.value().get<std::string>();
      continue;
    }
    SafetensorsEntry e = parse_entry(item.value(), path, item.key());
    MQ_CHECK(e.end <= h.data_size, "safetensors '", path, "': tensor '", item.key(),
             "': data_offsets [", e.begin, ", ", e.end, "] run past the end of the data section (",
             h.data_size, " bytes; file truncated?)");
    h.tensors.emplace(item.key(), std::move(e));
  }

  // No two tensors may share bytes.
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
  for (const auto& kv : h.tensors) order.emplace_back(&kv.first, &kv.second);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin
                                              : a.second->end < b.second->end;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& prev = order[i - 1];
    const auto& cur = order[i];
    if (cur.second->begin == cur.second->end) continue;  // empty tensors overlap nothing
    MQ_CHECK(cur.second->begin >= prev.second->end, "safetensors '", path, "': tensor '",
             *cur.first, "' (bytes [", cur.second->begin, ", ", cur.second->end,
             ")) overlaps tensor '", *prev.first, "' (bytes [", prev.second->begin, ", ",
             prev.second->end, "))");
  }
  return h;
}

TensorMap read_safetensors(const std::string& path, bool keep_dtype) {
  MQ_CHECK(host_is_little_endian(), "safetensors '", path,
           "': big-endian hosts are not supported");
  const SafetensorsHeader h = read_safetensors_header(path);
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in, "safetensors '", path, "': cannot open for reading");
  TensorMap out;
  for (const auto& kv : h.tensors) {
    const SafetensorsEntry& e = kv.second;
    const DtypeInfo* info = find_dtype(e.dtype);
    auto t = torch::empty(e.shape, torch::dtype(info->type));                // stored dtype
    const int64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      in.seekg(h.data_offset + e.begin);
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
      MQ_CHECK(in, "safetensors '", path, "': tensor '", kv.first, "': cannot read ", bytes,
               " bytes at offset ", h.data_offset + e.begin);
    }
    if (!keep_dtype && torch::isFloatingType(info->type) && info->type != torch::kFloat32)
      t = t.to(torch::kFloat32);
    out.emplace(kv.first, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata) {
  MQ_CHECK(host_is_little_endian(), "safetensors '", path,
           "': big-endian hosts are not supported");
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;  // contiguous CPU copies, in header order
  int64_t offset = 0;
  for (const auto& kv : tensors) {
    MQ_CHECK(kv.first != "__metadata__", "safetensors '", path,
             "': '__metadata__' is reserved and cannot name a tensor");
    MQ_CHECK(kv.second.defined(), "safetensors '", path, "': tensor '", kv.first,
             "' is undefined");
    const DtypeInfo* info = find_dtype(kv.second.scalar_type());
    MQ_CHECK(info != nullptr, "safetensors '", path, "': tensor '", kv.first, "' has dtype ",
             kv.second.scalar_type(), ", which safetensors cannot store here (expected one of [",
             dtype_names(), "])");
    auto t = kv.second.detach().to(torch::kCPU).contiguous();
    const int64_t bytes = t.numel() * info->size;
    header[kv.first] = {{"dtype", info->name},
                        {"shape", t.sizes().vec()},
                        {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section is 8-byte aligned

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MQ_CHECK(out, "safetensors '", path, "': cannot open '", tmp, "' for writing");
    unsigned char len_bytes[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    out.flush();
    if (!out) {
      out.close();
      fs::remove(tmp);
      throw make_error("safetensors '", path, "': writing '", tmp, "' failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    throw make_error("safetensors '", path, "': cannot rename '", tmp, "' into place: ",
                     ec.message());
  }
}

}  // namespace mq
