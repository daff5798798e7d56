// mobilequant/core/file_util.h
// Small file-system helpers the library and tests share.
#pragma once

#include <string>

namespace mq {

/// Removes `path` and everything below it (no error if it does not exist); throws
/// mq::Error naming the entry that could not be removed. Written on POSIX nftw rather
/// than std::filesystem::remove_all, which crashed beside the GPU machine's LibTorch
/// (its libtorch_cpu.so carries its own copies of std::filesystem internals).
void remove_tree(const std::string& path);

}  // namespace mq
