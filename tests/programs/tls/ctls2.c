/* The thread-local ctls.c uses from another object. */
__thread long other_tls = 100;
