#include <gmp.h>
#include <stdio.h>
int main(void) {
  mpz_t f; mpz_init_set_ui(f, 1);
  for (unsigned i = 2; i <= 40; i++) mpz_mul_ui(f, f, i);
  gmp_printf("gmp 40! = %Zd\n", f);
  mpz_clear(f);
  return 0;
}
