// mobilequant/core/error.h
// The one exception type of the library and the MQ_CHECK macro that throws it.
// Library code never exits or aborts: it throws mq::Error with a message that
// names the file, key or tensor, the expected and the actual value. Only main()
// catches, prints and returns non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mq {

/// The error every library failure is reported with.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
/// Concatenates every argument with operator<< into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (void)std::initializer_list<int>{((os << args), 0)...};
  return os.str();
}
}  // namespace detail

/// Builds an mq::Error from streamed parts: throw make_error("file '", p, "': ...").
template <typename... Args>
Error make_error(const Args&... args) {
  return Error(detail::str_cat(args...));
}

}  // namespace mq

/// Throws mq::Error with the concatenated message parts unless `cond` holds.
#define MQ_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::mq::make_error(__VA_ARGS__);         \
  } while (0)
