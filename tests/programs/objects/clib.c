/* A C library for tests/objects.rs: globals, a static local, a table of function pointers
   in data, strings, a callback into CLIF, atexit and an i128 division. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
int counter = 5;
static int hidden_total;
const char *names[] = {"zero", "one", "two", "three"};
static int twice(int x) { return 2 * x; }
static int thrice(int x) { return 3 * x; }
int (*ops[])(int) = {twice, thrice};
extern long clif_callback(long);
int next_id(void) { static int id = 100; return id++; }
long c_entry(long n) {
    long acc = 0;
    for (long i = 0; i < n; i++) {
        acc += ops[i % 2]((int)i) + counter;
        hidden_total += (int)i;
    }
    acc += clif_callback(acc);
    printf("c_entry(%ld): acc=%ld names[2]=%s len=%zu id=%d id=%d total=%d\n", n, acc, names[2], strlen(names[3]), next_id(), next_id(), hidden_total);
    return acc;
}
static void bye(void) { printf("atexit handler ran\n"); }
void install_bye(void) { atexit(bye); }
__int128 c_div(__int128 a, __int128 b) { return a / b; }
