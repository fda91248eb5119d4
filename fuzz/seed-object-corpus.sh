#!/usr/bin/env bash
# Seed the `object` fuzz target's corpus (fuzz/corpus/object/, not committed) with what real
# builds hand zerolink: gcc objects (PIE default, -fno-pic, -O2), g++ objects with exceptions,
# templates (COMDAT groups), static constructors and thread-locals, an IFUNC, code reading
# libc's data directly (copy relocations), an archive, and members of Debian's static
# libraries (zlib, lua, zstd, gmp, expat) where they are installed.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/object
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/f.c" <<'C'
#include <stdio.h>
extern int optind;
static int table[4] = {1, 2, 3, 4};
int *ptr = &table[2];
static int impl(void) { return 3; }
static void *resolve(void) { return (void *)impl; }
int g(void) __attribute__((ifunc("resolve")));
int f(void) { return *ptr + g() + optind + (stdout != 0); }
C
cat > "$tmp/x.cpp" <<'CPP'
#include <stdexcept>
#include <vector>
#include <string>
struct S { S() { v.push_back(1); } std::vector<int> v; };
static S s;
thread_local int tl = 2;
template <typename T> T twice(T x) { return x + x; }
extern "C" int f(void) {
  try { if (s.v.size() == 1) throw std::runtime_error("x"); } catch (const std::exception &) { return twice(tl); }
  return 0;
}
CPP
cc -c -O2 "$tmp/f.c" -o "$out/f-O2.o"
cc -c -O0 -fno-pic "$tmp/f.c" -o "$out/f-nopic.o"
cc -c -O1 -g "$tmp/f.c" -o "$out/f-g.o"
g++ -c -O1 "$tmp/x.cpp" -o "$out/x.o"
g++ -c -O0 -g "$tmp/x.cpp" -o "$out/x-g.o"
ar rcs "$out/libf.a" "$out/f-O2.o" "$out/x.o"
here=$(pwd)
for lib in z lua5.4 zstd gmp expat; do
    a=/usr/lib/x86_64-linux-gnu/lib$lib.a
    [ -f "$a" ] || continue
    rm -rf "$tmp/m" && mkdir "$tmp/m"
    (cd "$tmp/m" && ar x "$a")
    for m in $(ls "$tmp/m" | head -8); do
        cp "$tmp/m/$m" "$here/$out/$lib-$m"
    done
done
ls "$out" | wc -l
