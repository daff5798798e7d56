// mobilequant/export/onnx_proto.h
// A small protobuf wire-format writer for the ONNX messages the QDQ export needs (onnx_qdq.h),
// written here so that the library links no libprotobuf. Only encoding; nothing is parsed.
//
// Wire format (protobuf "Encoding" spec): every field is a key varint (field_number << 3 |
// wire_type) followed by its payload: wire type 0 a base-128 varint (little-endian groups of 7
// bits, high bit = more; a negative int32/int64 is its 64-bit two's complement, 10 bytes),
// type 5 four little-endian bytes (float), type 2 a varint length then the bytes (strings,
// bytes and embedded messages). onnx.proto is proto2, so repeated scalars are written
// unpacked, one key per element (parsers accept both forms).
//
// Field numbers (onnx/onnx.proto, IR version 10):
//   ModelProto          ir_version 1, producer_name 2, producer_version 3, domain 4,
//                       model_version 5, doc_string 6, graph 7, opset_import 8
//   OperatorSetIdProto  domain 1, version 2
//   GraphProto          node 1, name 2, initializer 5, doc_string 10, input 11, output 12,
//                       value_info 13
//   NodeProto           input 1, output 2, name 3, op_type 4, attribute 5, doc_string 6,
//                       domain 7
//   AttributeProto      name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, type 20
//   TensorProto         dims 1, data_type 2, name 8, raw_data 9
//   ValueInfoProto      name 1, type 2;  TypeProto tensor_type 1;  TypeProto.Tensor
//                       elem_type 1, shape 2;  TensorShapeProto dim 1;  Dimension dim_value 1,
//                       dim_param 2
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mq::onnx {

/// TensorProto.DataType values the export uses.
enum class DataType : int32_t {
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kUint16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kUint4 = 21,  ///< packed two per byte, first element in the low nibble
  kInt4 = 22,   ///< packed two per byte, first element in the low nibble
};
/// "float", "uint8", ... (for messages).
const char* to_string(DataType t);

/// AttributeProto.AttributeType values the export uses.
enum class AttributeType : int32_t {
  kFloat = 1,
  kInt = 2,
  kString = 3,
  kTensor = 4,
  kFloats = 6,
  kInts = 7,
};

/// Appends protobuf fields to a byte string (the low-level writer every message uses).
class WireWriter {
 public:
  /// Field `field` as a varint (wire type 0): uint64, or an int32/int64/enum/bool cast to it
  /// (negative values as their 64-bit two's complement).
  void varint(int field, uint64_t value);
  /// Field `field` as a 32-bit float (wire type 5, little-endian IEEE 754).
  void fixed_float(int field, float value);
  /// Field `field` as length-delimited bytes (wire type 2): a string, bytes or an embedded
  /// message's encoding.
  void bytes(int field, const std::string& payload);
  /// The bytes written so far.
  const std::string& data() const { return out_; }
  /// Moves the bytes out.
  std::string take() { return std::move(out_); }

 private:
  void raw_varint(uint64_t value);
  std::string out_;
};

/// Integer values as the raw_data of a tensor of type `t` (little-endian; 4-bit types packed
/// two per byte, first element in the low nibble, an odd count leaving the last high nibble
/// 0). Throws mq::Error naming the value and the range when one does not fit `t`.
std::string pack_integers(const std::vector<int64_t>& values, DataType t);

/// The base-128 varint encoding of `value`.
std::string encode_varint(uint64_t value);

/// A tensor: initializer or attribute value. Data as raw little-endian bytes (raw_data).
struct TensorProto {
  std::string name;                    ///< graph-wide tensor name ("" inside an attribute)
  DataType data_type = DataType::kFloat;
  std::vector<int64_t> dims;           ///< shape; empty for a scalar
  std::string raw_data;                ///< element bytes, row-major, little-endian (4-bit packed)
  /// The message's encoding.
  std::string encode() const;
};

/// One attribute of a node; `type` says which value field is used.
struct AttributeProto {
  std::string name;
  AttributeType type = AttributeType::kInt;
  float f = 0.0f;                      ///< kFloat
  int64_t i = 0;                       ///< kInt
  std::string s;                       ///< kString
  std::optional<TensorProto> t;        ///< kTensor
  std::vector<float> floats;           ///< kFloats
  std::vector<int64_t> ints;           ///< kInts
  /// The message's encoding.
  std::string encode() const;
};

/// One operator application.
struct NodeProto {
  std::vector<std::string> inputs;     ///< tensor names ("" for an omitted optional input)
  std::vector<std::string> outputs;    ///< tensor names
  std::string name;                    ///< node name (unique in the graph)
  std::string op_type;                 ///< "QuantizeLinear", "MatMul", ...
  std::string domain;                  ///< "" = ai.onnx
  std::vector<AttributeProto> attributes;
  /// The message's encoding.
  std::string encode() const;
};

/// One dimension of a shape: a fixed size or a symbolic name.
struct Dimension {
  int64_t value = 0;                   ///< used when param is empty
  std::string param;                   ///< symbolic dimension ("T"); empty for a fixed size
};

/// A graph input or output: name, element type and shape.
struct ValueInfoProto {
  std::string name;
  DataType elem_type = DataType::kFloat;
  std::vector<Dimension> shape;
  /// The message's encoding.
  std::string encode() const;
};

/// A graph: nodes in topological order, initializers, inputs and outputs.
struct GraphProto {
  std::string name;
  std::vector<NodeProto> nodes;
  std::vector<TensorProto> initializers;
  std::vector<ValueInfoProto> inputs;
  std::vector<ValueInfoProto> outputs;
  std::string doc_string;
  /// The message's encoding.
  std::string encode() const;
};

/// An opset import: domain ("" = ai.onnx) and version.
struct OperatorSetId {
  std::string domain;
  int64_t version = 0;
};

/// The model: IR version, opsets, producer and the graph.
struct ModelProto {
  int64_t ir_version = 0;
  std::vector<OperatorSetId> opset_imports;
  std::string producer_name;
  std::string producer_version;
  std::string doc_string;
  GraphProto graph;
  /// The message's encoding (the .onnx file's bytes).
  std::string encode() const;
};

// Builders for the common attribute kinds.
/// An INT attribute.
AttributeProto attr_int(const std::string& name, int64_t value);
/// A FLOAT attribute.
AttributeProto attr_float(const std::string& name, float value);
/// An INTS attribute.
AttributeProto attr_ints(const std::string& name, std::vector<int64_t> values);
/// A STRING attribute.
AttributeProto attr_string(const std::string& name, const std::string& value);
/// A TENSOR attribute (Constant's "value").
AttributeProto attr_tensor(const std::string& name, TensorProto value);

}  // namespace mq::onnx
