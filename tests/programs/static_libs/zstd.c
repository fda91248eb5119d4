#include <zstd.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  char src[4096]; for (int i = 0; i < 4096; i++) src[i] = "abcdefgh"[i % 8] + (i / 512);
  char comp[8192], back[4096];
  size_t c = ZSTD_compress(comp, sizeof comp, src, sizeof src, 3);
  size_t d = ZSTD_decompress(back, sizeof back, comp, c);
  printf("zstd %zu -> %zu -> %zu same=%d\n", sizeof src, c, d, memcmp(src, back, d) == 0);
  return 0;
}
