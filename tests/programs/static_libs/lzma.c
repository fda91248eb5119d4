#include <lzma.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  uint8_t src[4096]; for (int i = 0; i < 4096; i++) src[i] = (uint8_t)(i * 7 % 13);
  uint8_t comp[8192], back[4096]; size_t cpos = 0, bpos = 0, ipos = 0;
  if (lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, NULL, src, sizeof src, comp, &cpos, sizeof comp) != LZMA_OK) return 1;
  uint64_t limit = UINT64_MAX;
  if (lzma_stream_buffer_decode(&limit, 0, NULL, comp, &ipos, cpos, back, &bpos, sizeof back) != LZMA_OK) return 2;
  printf("lzma %zu -> %zu -> %zu same=%d %s\n", sizeof src, cpos, bpos, memcmp(src, back, bpos) == 0, lzma_version_string());
  return 0;
}
