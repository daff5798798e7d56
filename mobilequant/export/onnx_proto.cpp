// mobilequant/export/onnx_proto.cpp
#include "mobilequant/export/onnx_proto.h"

#include <cstdint>
#include <cstring>

#include "mobilequant/core/error.h"

namespace mq::onnx {

namespace {

constexpr int kWireVarint = 0;
constexpr int kWireLen = 2;
constexpr int kWireFixed32 = 5;

uint64_t key(int field, int wire_type) {
  return (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type);
}

}  // namespace

const char* to_string(DataType t) {
  switch (t) {
    case DataType::kFloat: return "float";
    case DataType::kUint8: return "uint8";
    case DataType::kInt8: return "int8";
    case DataType::kUint16: return "uint16";
    case DataType::kInt16: return "int16";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
    case DataType::kBool: return "bool";
    case DataType::kUint4: return "uint4";
    case DataType::kInt4: return "int4";
  }
  return "unknown";
}

std::string encode_varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}

void WireWriter::raw_varint(uint64_t value) { out_ += encode_varint(value); }

void WireWriter::varint(int field, uint64_t value) {
  raw_varint(key(field, kWireVarint));
  raw_varint(value);
}

void WireWriter::fixed_float(int field, float value) {
  raw_varint(key(field, kWireFixed32));
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  for (int b = 0; b < 4; ++b) out_.push_back(static_cast<char>((bits >> (8 * b)) & 0xFF));
}

void WireWriter::bytes(int field, const std::string& payload) {
  raw_varint(key(field, kWireLen));
  raw_varint(payload.size());
  out_ += payload;
}

std::string TensorProto::encode() const {
  WireWriter w;
  for (const int64_t d : dims) w.varint(1, static_cast<uint64_t>(d));
  w.varint(2, static_cast<uint64_t>(static_cast<int32_t>(data_type)));
  if (!name.empty()) w.bytes(8, name);
  w.bytes(9, raw_data);
  return w.take();
}

std::string AttributeProto::encode() const {
  WireWriter w;
  w.bytes(1, name);
  switch (type) {
    case AttributeType::kFloat: w.fixed_float(2, f); break;
    case AttributeType::kInt: w.varint(3, static_cast<uint64_t>(i)); break;
    case AttributeType::kString: w.bytes(4, s); break;
    case AttributeType::kTensor: w.bytes(5, t ? t->encode() : std::string()); break;
    case AttributeType::kFloats:
      for (const float v : floats) w.fixed_float(7, v);
      break;
    case AttributeType::kInts:
      for (const int64_t v : ints) w.varint(8, static_cast<uint64_t>(v));
      break;
  }
  w.varint(20, static_cast<uint64_t>(static_cast<int32_t>(type)));
  return w.take();
}

std::string NodeProto::encode() const {
  WireWriter w;
  for (const auto& in : inputs) w.bytes(1, in);
  for (const auto& out : outputs) w.bytes(2, out);
  if (!name.empty()) w.bytes(3, name);
  w.bytes(4, op_type);
  for (const auto& a : attributes) w.bytes(5, a.encode());
  if (!domain.empty()) w.bytes(7, domain);
  return w.take();
}

std::string ValueInfoProto::encode() const {
  WireWriter shape_w;  // TensorShapeProto
  for (const Dimension& d : shape) {
    WireWriter dim;
    if (d.param.empty()) {
      dim.varint(1, static_cast<uint64_t>(d.value));
    } else {
      dim.bytes(2, d.param);
    }
    shape_w.bytes(1, dim.data());
  }
  WireWriter tensor_type;  // TypeProto.Tensor
  tensor_type.varint(1, static_cast<uint64_t>(static_cast<int32_t>(elem_type)));
  tensor_type.bytes(2, shape_w.data());
  WireWriter type;  // TypeProto
  type.bytes(1, tensor_type.data());
  WireWriter w;
  w.bytes(1, name);
  w.bytes(2, type.data());
  return w.take();
}

std::string GraphProto::encode() const {
  WireWriter w;
  for (const auto& n : nodes) w.bytes(1, n.encode());
  w.bytes(2, name);
  for (const auto& t : initializers) w.bytes(5, t.encode());
  if (!doc_string.empty()) w.bytes(10, doc_string);
  for (const auto& v : inputs) w.bytes(11, v.encode());
  for (const auto& v : outputs) w.bytes(12, v.encode());
  return w.take();
}

std::string ModelProto::encode() const {
  WireWriter w;
  w.varint(1, static_cast<uint64_t>(ir_version));
  if (!producer_name.empty()) w.bytes(2, producer_name);
  if (!producer_version.empty()) w.bytes(3, producer_version);
  if (!doc_string.empty()) w.bytes(6, doc_string);
  w.bytes(7, graph.encode());
  for (const auto& o : opset_imports) {
    WireWriter op;
    op.bytes(1, o.domain);
    op.varint(2, static_cast<uint64_t>(o.version));
    w.bytes(8, op.data());
  }
  return w.take();
}

std::string pack_integers(const std::vector<int64_t>& values, DataType t) {
  int64_t lo = 0, hi = 0, nbytes = 0;
  switch (t) {
    case DataType::kUint4: lo = 0; hi = 15; break;
    case DataType::kInt4: lo = -8; hi = 7; break;
    case DataType::kUint8: lo = 0; hi = 255; nbytes = 1; break;
    case DataType::kInt8: lo = -128; hi = 127; nbytes = 1; break;
    case DataType::kBool: lo = 0; hi = 1; nbytes = 1; break;
    case DataType::kUint16: lo = 0; hi = 65535; nbytes = 2; break;
    case DataType::kInt16: lo = -32768; hi = 32767; nbytes = 2; break;
    case DataType::kInt32: lo = INT32_MIN; hi = INT32_MAX; nbytes = 4; break;
    case DataType::kInt64: lo = INT64_MIN; hi = INT64_MAX; nbytes = 8; break;
    case DataType::kFloat:
      throw make_error("onnx::pack_integers: float is no integer type");
  }
  for (size_t i = 0; i < values.size(); ++i)
    MQ_CHECK(values[i] >= lo && values[i] <= hi, "onnx::pack_integers: value[", i, "] = ",
             values[i], " outside ", to_string(t), " [", lo, ", ", hi, "]");
  std::string out;
  if (nbytes == 0) {  // 4-bit: two per byte, first element in the low nibble
    out.assign((values.size() + 1) / 2, '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      const auto nibble = static_cast<unsigned>(static_cast<uint64_t>(values[i]) & 0x0Fu);
      const auto byte = static_cast<unsigned char>(out[i / 2]);
      out[i / 2] = static_cast<char>(byte | (i % 2 == 0 ? nibble : nibble << 4));
    }
    return out;
  }
  out.reserve(values.size() * static_cast<size_t>(nbytes));
  for (const int64_t v : values) {
    const auto u = static_cast<uint64_t>(v);
    for (int64_t b = 0; b < nbytes; ++b) out.push_back(static_cast<char>((u >> (8 * b)) & 0xFF));
  }
  return out;
}

AttributeProto attr_int(const std::string& name, int64_t value) {
  AttributeProto a;
  a.name = name;
  a.type = AttributeType::kInt;
  a.i = value;
  return a;
}

AttributeProto attr_float(const std::string& name, float value) {
  AttributeProto a;
  a.name = name;
  a.type = AttributeType::kFloat;
  a.f = value;
  return a;
}

AttributeProto attr_ints(const std::string& name, std::vector<int64_t> values) {
  AttributeProto a;
  a.name = name;
  a.type = AttributeType::kInts;
  a.ints = std::move(values);
  return a;
}

AttributeProto attr_string(const std::string& name, const std::string& value) {
  AttributeProto a;
  a.name = name;
  a.type = AttributeType::kString;
  a.s = value;
  return a;
}

AttributeProto attr_tensor(const std::string& name, TensorProto value) {
  AttributeProto a;
  a.name = name;
  a.type = AttributeType::kTensor;
  a.t = std::move(value);
  return a;
}

}  // namespace mq::onnx
