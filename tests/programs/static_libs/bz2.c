#include <bzlib.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  char src[4096]; for (int i = 0; i < 4096; i++) src[i] = 'a' + i % 5;
  char comp[8192], back[4096]; unsigned c = sizeof comp, b = sizeof back;
  if (BZ2_bzBuffToBuffCompress(comp, &c, src, sizeof src, 9, 0, 0) != BZ_OK) return 1;
  if (BZ2_bzBuffToBuffDecompress(back, &b, comp, c, 0, 0) != BZ_OK) return 2;
  printf("bz2 %zu -> %u -> %u same=%d\n", sizeof src, c, b, memcmp(src, back, b) == 0);
  return 0;
}
