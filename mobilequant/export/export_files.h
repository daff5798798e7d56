// mobilequant/export/export_files.h
// File helpers of the export directory: SHA-256 checksums (FIPS 180-4, written here: the
// library links no crypto package) and a recursive listing. Both walk the file system with
// POSIX calls rather than std::filesystem iterators (see core/file_util.h for why).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mq {

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
std::string sha256_hex(const std::string& bytes);
/// The SHA-256 of the file at `path` and its size in bytes; throws mq::Error naming the file
/// when it cannot be read.
std::pair<std::string, int64_t> sha256_file(const std::string& path);

/// Every regular file below `dir`, as paths relative to `dir` with '/' separators, sorted.
/// Symbolic links and other non-regular entries are listed too (the linter reports them).
std::vector<std::string> list_files(const std::string& dir);

/// The whole file as bytes; throws mq::Error naming `path` when it cannot be read.
std::string read_file_bytes(const std::string& path);
/// Writes `bytes` to `path` through a temporary file beside it and a rename.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace mq
