// mobilequant/core/file_util.cpp
#include "mobilequant/core/file_util.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "mobilequant/core/error.h"

namespace mq {

namespace {
std::string g_failed;  // first entry that could not be removed (nftw has no user pointer)

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  if (std::remove(path) != 0) {
    g_failed = std::string(path) + ": " + std::strerror(errno);
    return 1;
  }
  return 0;
}
}  // namespace

void remove_tree(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return;  // nothing there
  g_failed.clear();
  const int rc = nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  MQ_CHECK(rc == 0, "remove_tree('", path, "'): cannot remove ",
           g_failed.empty() ? std::string(std::strerror(errno)) : g_failed);
}

}  // namespace mq
