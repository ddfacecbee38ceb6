/* buf.h -- growable byte buffers, bounds-checked readers, descriptor lists (buf.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_BUF_H
#define MPE_BUF_H

#include <stddef.h>
#include <stdint.h>

/* The wire is little-endian; on a little-endian host (every Linux target
 * mpe runs on today) integers are copied as they are. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MPE_LE 1
#else
#define MPE_LE 0
#endif

/* A growable byte buffer. Memory comes from malloc; whoever embeds the struct
 * frees it with mpe__buf_free. A buffer that may be live when a Lua error is
 * raised must be owned by a Lua value (mpe__buf_box), never by a C local. */
typedef struct mpe_buf {
    char *p;
    size_t n, cap;
} mpe_buf;

/* Make room for `extra` more bytes. Returns 0, or -1 with errno ENOMEM. */
int mpe__buf_grow(mpe_buf *b, size_t extra);
void mpe__buf_free(mpe_buf *b);

/* A bounds-checked reader over bytes it does not own. Every getter returns 0,
 * or -1 when the input ends too early (then *out is left unchanged). */
typedef struct mpe_rd {
    const unsigned char *p;
    size_t n, pos;
} mpe_rd;

void mpe__rd_init(mpe_rd *r, const void *p, size_t n);
int mpe__rd_u8(mpe_rd *r, unsigned *out);
int mpe__rd_u32(mpe_rd *r, uint32_t *out);
int mpe__rd_u64(mpe_rd *r, uint64_t *out);
int mpe__rd_f64(mpe_rd *r, double *out);
int mpe__rd_varint(mpe_rd *r, uint64_t *out);
/* Point *out at the next n bytes (inside the reader's input) and skip them. */
int mpe__rd_bytes(mpe_rd *r, size_t n, const unsigned char **out);

/* Descriptors travelling with a message: mpe_fds, a growable list (fdio.h). */
#include "fdio.h"

#endif
