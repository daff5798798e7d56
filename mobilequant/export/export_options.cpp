// mobilequant/export/export_options.cpp
#include "mobilequant/export/export_options.h"

#include <algorithm>
#include <sstream>

#include "mobilequant/core/error.h"

namespace mq {

const char* to_string(ExportFormat f) {
  switch (f) {
    case ExportFormat::kHf: return "hf";
    case ExportFormat::kReference: return "reference";
    case ExportFormat::kAimet: return "aimet";
    case ExportFormat::kInt: return "int";
    case ExportFormat::kOnnx: return "onnx";
  }
  throw make_error("ExportFormat: invalid value ", static_cast<int>(f));
}

const std::vector<ExportFormat>& EnumValues<ExportFormat>::values() {
  static const std::vector<ExportFormat> all = {ExportFormat::kHf, ExportFormat::kReference,
                                                ExportFormat::kAimet, ExportFormat::kInt,
                                                ExportFormat::kOnnx};
  return all;
}

std::vector<ExportFormat> parse_export_formats(const std::string& list, const std::string& where) {
  if (list.empty() || list == "all") return EnumValues<ExportFormat>::values();
  std::vector<ExportFormat> picked;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    MQ_CHECK(!item.empty(), where, ": empty entry in '", list, "', expected a comma list of ",
             enum_choices<ExportFormat>());
    const ExportFormat f = parse_enum<ExportFormat>(item, where);
    MQ_CHECK(std::find(picked.begin(), picked.end(), f) == picked.end(), where, ": '", item,
             "' is listed twice in '", list, "'");
    picked.push_back(f);
  }
  std::vector<ExportFormat> out;  // EnumValues order
  for (const ExportFormat f : EnumValues<ExportFormat>::values())
    if (std::find(picked.begin(), picked.end(), f) != picked.end()) out.push_back(f);
  return out;
}

bool ExportOptions::has(ExportFormat f) const {
  return std::find(formats.begin(), formats.end(), f) != formats.end();
}

void ExportOptions::validate() const {
  MQ_CHECK(!formats.empty(), "export: --format: no format given, expected some of ",
           enum_choices<ExportFormat>());
  MQ_CHECK(float_bits == 16 || float_bits == 32, "export: --float-bits: got ", float_bits,
           ", expected 16 or 32");
}

}  // namespace mq
