// C++ that throws, and catches, across a frame of CLIF code (`through_clif.clif`).
#include <cstdio>
#include <stdexcept>

extern "C" int clif_middle(int);

extern "C" int cxx_throw(int x) {
    if (x > 2)
        throw std::runtime_error("too big");
    return x * 10;
}

extern "C" int cxx_catch(int x) {
    try {
        return clif_middle(x);
    } catch (const std::exception &e) {
        std::printf("caught %s\n", e.what());
        return -1;
    }
}
