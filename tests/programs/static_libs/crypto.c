#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <stdio.h>
int main(void) {
  unsigned char md[EVP_MAX_MD_SIZE]; unsigned len;
  EVP_Digest("abc", 3, md, &len, EVP_sha256(), NULL);
  printf("sha256(abc)=");
  for (unsigned i = 0; i < len; i++) printf("%02x", md[i]);
  printf("\n%s\n", OpenSSL_version(OPENSSL_VERSION) != NULL ? "version ok" : "no version");
  return 0;
}
