#include <stdexcept>
#include <string>
std::string thrower(int x) {
  if (x < 0) throw 17;
  throw std::runtime_error("bad value " + std::to_string(x));
}
