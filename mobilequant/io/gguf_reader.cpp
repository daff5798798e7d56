// mobilequant/io/gguf_reader.cpp
// GGUF v3 parsing over a read-only memory map, with bounds checks on every read, and the
// ggml block dequantizers (scalar loops over blocks, parallel over blocks with
// at::parallel_for; float operations in the same order as gguf-py so results are bitwise equal).
#include "mobilequant/io/gguf_reader.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;       // arrays of arrays deeper than this are corrupt

// ggml's table: name, elements per block, bytes per block, dequantizable here.
struct TypeEntry {
  uint32_t id;
  GgmlTypeTraits traits;
};
const TypeEntry kTypes[] = {
    {0, {"F32", 1, 4, true}},         {1, {"F16", 1, 2, true}},
    {2, {"Q4_0", 32, 18, true}},      {3, {"Q4_1", 32, 20, true}},
    {6, {"Q5_0", 32, 22, true}},      {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},      {9, {"Q8_1", 32, 40, false}},
    {10, {"Q2_K", 256, 84, false}},   {11, {"Q3_K", 256, 110, false}},
    {12, {"Q4_K", 256, 144, true}},   {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}},   {15, {"Q8_K", 256, 292, false}},
    {16, {"IQ2_XXS", 256, 66, false}}, {17, {"IQ2_XS", 256, 74, false}},
    {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},  {21, {"IQ3_S", 256, 110, false}},
    {22, {"IQ2_S", 256, 82, false}},  {23, {"IQ4_XS", 256, 136, false}},
    {24, {"I8", 1, 1, true}},         {25, {"I16", 1, 2, true}},
    {26, {"I32", 1, 4, true}},        {27, {"I64", 1, 8, true}},
    {28, {"F64", 1, 8, true}},        {29, {"IQ1_M", 256, 56, false}},
    {30, {"BF16", 1, 2, true}},       {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},  {39, {"MXFP4", 32, 17, false}},
};

std::string supported_types_list() {
  std::string out;
  for (const auto& e : kTypes) {
    if (!e.traits.dequantizable) continue;
    if (!out.empty()) out += ", ";
    out += e.traits.name;
  }
  return out;
}

// Little-endian loads from unaligned memory.
template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

float half_to_float(const uint8_t* p) {
  return c10::detail::fp16_ieee_to_fp32_value(load<uint16_t>(p));
}

float bf16_to_float(const uint8_t* p) {
  const uint32_t bits = static_cast<uint32_t>(load<uint16_t>(p)) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// The magic as text when printable, else as hex bytes.
std::string describe_magic(const uint8_t* p) {
  bool printable = true;
  for (int k = 0; k < 4; ++k) printable = printable && std::isprint(p[k]);
  std::ostringstream os;
  if (printable) {
    os << "'" << std::string(reinterpret_cast<const char*>(p), 4) << "'";
  } else {
    os << "0x" << std::hex;
    for (int k = 0; k < 4; ++k) os << (p[k] < 16 ? "0" : "") << static_cast<int>(p[k]);
  }
  return os.str();
}

// A bounds-checked reader over the mapped file. `context` says what is being read.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  void set_context(std::string context) { context_ = std::move(context); }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n) const {
    if (n > remaining()) {
      throw make_error("gguf '", path_, "': truncated file: ", context_, " needs ", n,
                       " bytes at offset ", pos_, ", but the file has ", size_, " bytes");
    }
  }
  template <typename T>
  T read() {
    need(sizeof(T));
    T v = load<T>(data_ + pos_);
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string() {
    const uint64_t len = read<uint64_t>();
    if (len > remaining()) {
      throw make_error("gguf '", path_, "': truncated file: ", context_, ": a string of ", len,
                       " bytes at offset ", pos_ - 8, " runs past the end of the file (",
                       size_, " bytes)");
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string context_ = "the header";
};

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

// Smallest encoding of one value of type `t` (for rejecting absurd array counts early).
uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    case GgufType::kString: return 8;
    case GgufType::kArray: return 12;
  }
  return 1;
}

// Reads one scalar of type `t` into `v` (its u/i/f/s field).
void read_scalar(Cursor& cur, GgufType t, GgufValue& v) {
  switch (t) {
    case GgufType::kUint8: v.u = cur.read<uint8_t>(); break;
    case GgufType::kInt8: v.i = cur.read<int8_t>(); break;
    case GgufType::kUint16: v.u = cur.read<uint16_t>(); break;
    case GgufType::kInt16: v.i = cur.read<int16_t>(); break;
    case GgufType::kUint32: v.u = cur.read<uint32_t>(); break;
    case GgufType::kInt32: v.i = cur.read<int32_t>(); break;
    case GgufType::kUint64: v.u = cur.read<uint64_t>(); break;
    case GgufType::kInt64: v.i = cur.read<int64_t>(); break;
    case GgufType::kFloat32: v.f = cur.read<float>(); break;
    case GgufType::kFloat64: v.f = cur.read<double>(); break;
    case GgufType::kBool: v.u = cur.read<uint8_t>() != 0 ? 1 : 0; break;
    case GgufType::kString: v.s = cur.read_string(); break;
    case GgufType::kArray: break;  // handled by read_value
  }
}

bool is_unsigned(GgufType t) {
  return t == GgufType::kUint8 || t == GgufType::kUint16 || t == GgufType::kUint32 ||
         t == GgufType::kUint64;
}
bool is_signed(GgufType t) {
  return t == GgufType::kInt8 || t == GgufType::kInt16 || t == GgufType::kInt32 ||
         t == GgufType::kInt64;
}
bool is_float(GgufType t) { return t == GgufType::kFloat32 || t == GgufType::kFloat64; }

GgufValue read_value(Cursor& cur, GgufType type, const std::string& path, const std::string& key,
                     int depth) {
  GgufValue v;
  v.type = type;
  if (type != GgufType::kArray) {
    read_scalar(cur, type, v);
    return v;
  }
  MQ_CHECK(depth < kMaxArrayNesting, "gguf '", path, "': metadata key '", key,
           "': arrays nested deeper than ", kMaxArrayNesting, " levels (corrupt file?)");
  const uint32_t raw_elem = cur.read<uint32_t>();
  MQ_CHECK(is_known_value_type(raw_elem), "gguf '", path, "': metadata key '", key,
           "': array of unknown value type ", raw_elem, " (expected 0..12)");
  const auto elem = static_cast<GgufType>(raw_elem);
  v.element_type = elem;
  const uint64_t count = cur.read<uint64_t>();
  if (count > cur.remaining() / min_value_bytes(elem)) {
    throw make_error("gguf '", path, "': metadata key '", key, "': absurd array length ", count,
                     " of ", to_string(elem), " at offset ", cur.pos() - 8,
                     " (only ", cur.remaining(), " bytes are left in the file)");
  }
  GgufValue item;
  for (uint64_t k = 0; k < count; ++k) {
    if (elem == GgufType::kArray) {
      v.nested.push_back(read_value(cur, GgufType::kArray, path, key, depth + 1));
      continue;
    }
    read_scalar(cur, elem, item);
    if (is_unsigned(elem) || elem == GgufType::kBool) {
      v.us.push_back(item.u);
    } else if (is_signed(elem)) {
      v.is.push_back(item.i);
    } else if (is_float(elem)) {
      v.fs.push_back(item.f);
    } else {
      v.ss.push_back(std::move(item.s));
    }
  }
  return v;
}

std::string type_error(const std::string& path, const std::string& key, const char* expected,
                       const GgufValue& v) {
  return detail::str_cat("gguf '", path, "': metadata key '", key, "' has type ", v.type_name(),
                         ", expected ", expected);
}

// ---- dequantization: one function per block layout ----------------------------------------

// Q4_0: f16 d, 16 bytes of nibbles; y = d * (q - 8). Low nibbles are elements 0..15.
void deq_q4_0(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((qs[j] & 0x0F) - 8);
    y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

// Q4_1: f16 d, f16 m, 16 bytes of nibbles; y = d * q + m.
void deq_q4_1(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const float m = half_to_float(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0x0F) + m;
    y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

// Q5_0: f16 d, u32 of 5th bits (bit j for element j), 16 bytes of nibbles; y = d * (q - 16).
void deq_q5_0(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const uint32_t qh = load<uint32_t>(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo - 16);
    y[j + 16] = d * static_cast<float>(hi - 16);
  }
}

// Q5_1: f16 d, f16 m, u32 of 5th bits, 16 bytes of nibbles; y = d * q + m.
void deq_q5_1(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const float m = half_to_float(b + 2);
  const uint32_t qh = load<uint32_t>(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo) + m;
    y[j + 16] = d * static_cast<float>(hi) + m;
  }
}

// Q8_0: f16 d, 32 int8; y = q * d.
void deq_q8_0(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block (12 packed bytes).
void k_scale_min(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; 8 sub-blocks of 32:
// sub-block 2c takes the low nibbles of bytes [32c, 32c+32), 2c+1 the high ones.
// y = (d * sc) * q - (dmin * m).
void deq_q4_k(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const float dmin = half_to_float(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    k_scale_min(j, scales, sc, m);
    const float dj = d * static_cast<float>(sc);
    const float mj = dmin * static_cast<float>(m);
    const uint8_t* q = qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) y[j * 32 + l] = dj * static_cast<float>((q[l] >> shift) & 0x0F) - mj;
  }
}

// Q5_K: as Q4_K plus 32 bytes of 5th bits (bit j of byte l for element l of sub-block j).
void deq_q5_k(const uint8_t* b, float* y) {
  const float d = half_to_float(b);
  const float dmin = half_to_float(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    k_scale_min(j, scales, sc, m);
    const float dj = d * static_cast<float>(sc);
    const float mj = dmin * static_cast<float>(m);
    const uint8_t* q = qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
      y[j * 32 + l] = dj * static_cast<float>(v) - mj;
    }
  }
}

// Q6_K: 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d; two halves of
// 128 elements, each four groups of 32: group (k, c) takes nibble k of ql[64h + 32c + l] and
// bits 2(2k+c).. of qh[32h + l]. y = (d * scale[e / 16]) * (q - 32).
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_to_float(b + 208);
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 2; ++k) {
      for (int c = 0; c < 2; ++c) {
        const int group = h * 4 + k * 2 + c;
        const int hshift = 2 * (2 * k + c);
        for (int l = 0; l < 32; ++l) {
          const int lo = (ql[h * 64 + c * 32 + l] >> (4 * k)) & 0x0F;
          const int hi = (qh[h * 32 + l] >> hshift) & 0x03;
          const int e = group * 32 + l;
          const float ds = d * static_cast<float>(scales[e / 16]);
          y[e] = ds * static_cast<float>((lo | (hi << 4)) - 32);
        }
      }
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_function(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0: return deq_q4_0;
    case GgmlType::kQ4_1: return deq_q4_1;
    case GgmlType::kQ5_0: return deq_q5_0;
    case GgmlType::kQ5_1: return deq_q5_1;
    case GgmlType::kQ8_0: return deq_q8_0;
    case GgmlType::kQ4_K: return deq_q4_k;
    case GgmlType::kQ5_K: return deq_q5_k;
    case GgmlType::kQ6_K: return deq_q6_k;
    case GgmlType::kF16: return [](const uint8_t* b, float* y) { *y = half_to_float(b); };
    case GgmlType::kBF16: return [](const uint8_t* b, float* y) { *y = bf16_to_float(b); };
    case GgmlType::kF32: return [](const uint8_t* b, float* y) { *y = load<float>(b); };
    case GgmlType::kF64:
      return [](const uint8_t* b, float* y) { *y = static_cast<float>(load<double>(b)); };
    case GgmlType::kI8:
      return [](const uint8_t* b, float* y) { *y = static_cast<float>(load<int8_t>(b)); };
    case GgmlType::kI16:
      return [](const uint8_t* b, float* y) { *y = static_cast<float>(load<int16_t>(b)); };
    case GgmlType::kI32:
      return [](const uint8_t* b, float* y) { *y = static_cast<float>(load<int32_t>(b)); };
    case GgmlType::kI64:
      return [](const uint8_t* b, float* y) { *y = static_cast<float>(load<int64_t>(b)); };
    default: return nullptr;
  }
}

}  // namespace

const char* to_string(GgufType type) {
  switch (type) {
    case GgufType::kUint8: return "uint8";
    case GgufType::kInt8: return "int8";
    case GgufType::kUint16: return "uint16";
    case GgufType::kInt16: return "int16";
    case GgufType::kUint32: return "uint32";
    case GgufType::kInt32: return "int32";
    case GgufType::kFloat32: return "float32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kUint64: return "uint64";
    case GgufType::kInt64: return "int64";
    case GgufType::kFloat64: return "float64";
  }
  return "unknown";
}

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  for (const auto& e : kTypes) {
    if (e.id == type) return &e.traits;
  }
  return nullptr;
}

size_t GgufValue::array_size() const {
  if (type != GgufType::kArray) return 0;
  return us.size() + is.size() + fs.size() + ss.size() + nested.size();
}

std::string GgufValue::type_name() const {
  if (type != GgufType::kArray) return to_string(type);
  return std::string("array[") + to_string(element_type) + "]";
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

void dequantize_ggml(GgmlType type, const uint8_t* src, uint64_t n_bytes, int64_t n_elements,
                     float* dst, const std::string& what) {
  const GgmlTypeTraits* traits = ggml_type_traits(static_cast<uint32_t>(type));
  MQ_CHECK(traits != nullptr, what, ": unknown ggml type ", static_cast<uint32_t>(type));
  const BlockFn fn = block_function(type);
  MQ_CHECK(fn != nullptr && traits->dequantizable, what, ": ggml type ", traits->name, " (",
           static_cast<uint32_t>(type), ") cannot be dequantized (supported: ",
           supported_types_list(), ")");
  MQ_CHECK(n_elements % traits->block_size == 0, what, ": ", n_elements,
           " elements are not a whole number of ", traits->name, " blocks of ",
           traits->block_size);
  const int64_t n_blocks = n_elements / traits->block_size;
  MQ_CHECK(static_cast<uint64_t>(n_blocks) * static_cast<uint64_t>(traits->type_size) <= n_bytes,
           what, ": ", n_blocks, " ", traits->name, " blocks need ",
           n_blocks * traits->type_size, " bytes, only ", n_bytes, " given");
  const int64_t bs = traits->block_size;
  const int64_t ts = traits->type_size;
  const int64_t grain = std::max<int64_t>(1, 32768 / bs);
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) fn(src + k * ts, dst + k * bs);
  });
}

// ---- GgufReader -------------------------------------------------------------------------------

GgufReader::GgufReader(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MQ_CHECK(fd >= 0, "gguf '", path, "': cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw make_error("gguf '", path, "': cannot stat: ", std::strerror(err));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    MQ_CHECK(p != MAP_FAILED, "gguf '", path, "': cannot map ", size_, " bytes: ",
             std::strerror(err));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  try {
    parse();
  } catch (...) {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    throw;
  }
}

GgufReader::~GgufReader() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void GgufReader::parse() {
  Cursor cur(path_, data_, size_);
  cur.set_context("the header (magic)");
  cur.need(4);
  MQ_CHECK(std::memcmp(data_, "GGUF", 4) == 0, "gguf '", path_, "': not a GGUF file: magic ",
           describe_magic(data_), ", expected 'GGUF'");
  cur.read<uint32_t>();
  cur.set_context("the header (version)");
  version_ = cur.read<uint32_t>();
  MQ_CHECK(version_ == kGgufVersion, "gguf '", path_, "': unsupported GGUF version ", version_,
           ", only version ", kGgufVersion, " is supported",
           version_ < kGgufVersion ? " (re-convert the model with a current llama.cpp)" : "");
  cur.set_context("the header (tensor and metadata counts)");
  const uint64_t n_tensors = cur.read<uint64_t>();
  const uint64_t n_kv = cur.read<uint64_t>();
  // Counts that could not fit even in a file of this size are corruption, not truncation
  // (a plausible count in a short file is reported where the data runs out).
  MQ_CHECK(n_kv <= size_, "gguf '", path_, "': absurd metadata count ", n_kv,
           " (the file has only ", size_, " bytes)");
  MQ_CHECK(n_tensors <= size_, "gguf '", path_, "': absurd tensor count ", n_tensors,
           " (the file has only ", size_, " bytes)");

  // Metadata.
  std::map<std::string, uint64_t> key_entry;
  for (uint64_t k = 0; k < n_kv; ++k) {
    cur.set_context(detail::str_cat("metadata entry #", k, " (key)"));
    std::string key = cur.read_string();
    cur.set_context(detail::str_cat("metadata entry #", k, " ('", key, "')"));
    const uint32_t raw_type = cur.read<uint32_t>();
    MQ_CHECK(is_known_value_type(raw_type), "gguf '", path_, "': metadata key '", key,
             "' has unknown value type ", raw_type, " (expected 0..12)");
    GgufValue v = read_value(cur, static_cast<GgufType>(raw_type), path_, key, 0);
    auto [it, inserted] = key_entry.emplace(key, k);
    MQ_CHECK(inserted, "gguf '", path_, "': duplicate metadata key '", key, "' (entries #",
             it->second, " and #", k, ")");
    key_order_.push_back(key);
    metadata_.emplace(std::move(key), std::move(v));
  }

  if (has("general.alignment")) {
    const GgufValue& a = value("general.alignment");
    MQ_CHECK(a.type == GgufType::kUint32, type_error(path_, "general.alignment", "uint32", a));
    MQ_CHECK(a.u != 0 && (a.u & (a.u - 1)) == 0, "gguf '", path_,
             "': general.alignment must be a power of two, got ", a.u);
    alignment_ = a.u;
  } else {
    alignment_ = kDefaultAlignment;
  }

  // Tensor table.
  tensors_.reserve(std::min<uint64_t>(n_tensors, 1 << 16));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    cur.set_context(detail::str_cat("tensor info #", k, " (name)"));
    t.name = cur.read_string();
    cur.set_context(detail::str_cat("tensor info #", k, " ('", t.name, "')"));
    const uint32_t n_dims = cur.read<uint32_t>();
    MQ_CHECK(n_dims >= 1 && n_dims <= kMaxDims, "gguf '", path_, "': tensor '", t.name,
             "' has ", n_dims, " dimensions, expected 1..", kMaxDims);
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = cur.read<uint64_t>();
      // Elements must fit in int64 (and the bytes in the file, checked below).
      MQ_CHECK(ne <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                   (ne == 0 || n_elements <= static_cast<uint64_t>(
                                                 std::numeric_limits<int64_t>::max()) / ne),
               "gguf '", path_, "': tensor '", t.name, "' has an absurd shape (ne[", d,
               "] = ", ne, ")");
      n_elements *= ne;
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    const uint32_t raw_type = cur.read<uint32_t>();
    const GgmlTypeTraits* traits = ggml_type_traits(raw_type);
    MQ_CHECK(traits != nullptr, "gguf '", path_, "': tensor '", t.name,
             "' has unknown ggml type ", raw_type);
    t.type = static_cast<GgmlType>(raw_type);
    t.offset = cur.read<uint64_t>();
    t.n_elements = static_cast<int64_t>(n_elements);
    MQ_CHECK(t.ne[0] % traits->block_size == 0, "gguf '", path_, "': tensor '", t.name, "' (",
             traits->name, "): ne[0] = ", t.ne[0], " is not a multiple of the block size ",
             traits->block_size);
    const uint64_t n_blocks = n_elements / static_cast<uint64_t>(traits->block_size);
    MQ_CHECK(n_blocks <= size_ / static_cast<uint64_t>(traits->type_size), "gguf '", path_,
             "': tensor '", t.name, "' has an absurd size (", n_elements, " elements of ",
             traits->name, " in a file of ", size_, " bytes)");
    t.n_bytes = n_blocks * static_cast<uint64_t>(traits->type_size);
    MQ_CHECK(t.offset % alignment_ == 0, "gguf '", path_, "': tensor '", t.name,
             "': data offset ", t.offset, " is not a multiple of the alignment ", alignment_);
    auto [it, inserted] = tensor_index_.emplace(t.name, tensors_.size());
    MQ_CHECK(inserted, "gguf '", path_, "': duplicate tensor name '", t.name, "' (tensors #",
             it->second, " and #", k, ")");
    tensors_.push_back(std::move(t));
  }

  // Data section: aligned after the tensor table; every tensor must lie inside the file.
  data_offset_ = (cur.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (const auto& t : tensors_) {
    const bool inside = data_offset_ <= size_ && t.offset <= size_ - data_offset_ &&
                        t.n_bytes <= size_ - data_offset_ - t.offset;
    MQ_CHECK(inside, "gguf '", path_, "': truncated file: tensor '", t.name, "' data (",
             t.n_bytes, " bytes at offset ", data_offset_ + t.offset,
             ") runs past the end of the file (", size_, " bytes)");
  }
}

const GgufValue& GgufReader::value(const std::string& key) const {
  auto it = metadata_.find(key);
  MQ_CHECK(it != metadata_.end(), "gguf '", path_, "': missing metadata key '", key, "'");
  return it->second;
}

int64_t GgufReader::get_int(const std::string& key) const {
  const GgufValue& v = value(key);
  if (is_signed(v.type)) return v.i;
  MQ_CHECK(is_unsigned(v.type), type_error(path_, key, "an integer", v));
  MQ_CHECK(v.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "gguf '", path_,
           "': metadata key '", key, "': value ", v.u, " does not fit in int64");
  return static_cast<int64_t>(v.u);
}

int64_t GgufReader::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufReader::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  if (is_float(v.type)) return v.f;
  if (is_signed(v.type) || is_unsigned(v.type)) return static_cast<double>(get_int(key));
  throw make_error(type_error(path_, key, "a float", v));
}

double GgufReader::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufReader::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  MQ_CHECK(v.type == GgufType::kBool, type_error(path_, key, "bool", v));
  return v.u != 0;
}

bool GgufReader::get_bool(const std::string& key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}

const std::string& GgufReader::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  MQ_CHECK(v.type == GgufType::kString, type_error(path_, key, "string", v));
  return v.s;
}

std::string GgufReader::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

const std::vector<std::string>& GgufReader::get_string_array(const std::string& key) const {
  const GgufValue& v = value(key);
  MQ_CHECK(v.type == GgufType::kArray && v.element_type == GgufType::kString,
           type_error(path_, key, "array[string]", v));
  return v.ss;
}

std::vector<int64_t> GgufReader::get_int_array(const std::string& key) const {
  const GgufValue& v = value(key);
  MQ_CHECK(v.type == GgufType::kArray &&
               (is_signed(v.element_type) || is_unsigned(v.element_type)),
           type_error(path_, key, "an array of integers", v));
  if (is_signed(v.element_type)) return v.is;
  std::vector<int64_t> out;
  out.reserve(v.us.size());
  for (uint64_t u : v.us) {
    MQ_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "gguf '", path_,
             "': metadata key '", key, "': element ", u, " does not fit in int64");
    out.push_back(static_cast<int64_t>(u));
  }
  return out;
}

std::vector<double> GgufReader::get_float_array(const std::string& key) const {
  const GgufValue& v = value(key);
  MQ_CHECK(v.type == GgufType::kArray && is_float(v.element_type),
           type_error(path_, key, "an array of floats", v));
  return v.fs;
}

const GgufTensorInfo& GgufReader::tensor_info(const std::string& name) const {
  auto it = tensor_index_.find(name);
  MQ_CHECK(it != tensor_index_.end(), "gguf '", path_, "': no tensor named '", name, "'");
  return tensors_[it->second];
}

const uint8_t* GgufReader::tensor_data(const std::string& name) const {
  return data_ + data_offset_ + tensor_info(name).offset;
}

torch::Tensor GgufReader::tensor(const std::string& name) const {
  const GgufTensorInfo& t = tensor_info(name);
  auto out = torch::empty(t.shape(), torch::kFloat32);  // ne reversed: [ne_{n-1}, ..., ne0]
  dequantize_ggml(t.type, tensor_data(name), t.n_bytes, t.n_elements, out.data_ptr<float>(),
                  detail::str_cat("gguf '", path_, "': tensor '", name, "'"));
  return out;
}

TensorMap GgufReader::all_tensors() const {
  TensorMap out;
  for (const auto& t : tensors_) out.emplace(t.name, tensor(t.name));
  return out;
}

}  // namespace mq
