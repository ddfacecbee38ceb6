/* err.h -- the engine's error record and message formatting (err.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_ERR_H
#define MPE_ERR_H

#define MPE_LIKELY(x) __builtin_expect(!!(x), 1)
#define MPE_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Engine functions return 0 / -1 (or a pointer / NULL) and describe a failure
 * in an mpe_err the caller provides, naming the failing call and object. */
typedef struct mpe_err {
    char msg[256];
} mpe_err;

/* Format a message into e (e may be NULL). Preserves errno. Always returns -1. */
int mpe__seterr(mpe_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
