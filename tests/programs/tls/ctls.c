/* Thread-locals in C (tests/tls.rs): an initialised global, a static one (local-dynamic with
   -fPIC), an array, and one defined in another object (initial-exec without -fPIC). */
#include <pthread.h>
#include <stdio.h>
__thread long tcount = 3;
static __thread int tl_static;
__thread char tbuf[64];
extern __thread long other_tls;
long bump(long n) {
    for (long i = 0; i < n; i++) tcount++;
    tl_static += 2;
    tbuf[5] = 'x';
    other_tls += 1;
    return tcount + tl_static + tbuf[5] + other_tls;
}
static void *worker(void *arg) { return (void *)bump((long)arg); }
long run_threads(void) {
    pthread_t t[4];
    long sum = 0;
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, (void *)(1000 * (i + 1)));
    for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
    return sum;
}
