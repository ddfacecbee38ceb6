/* buf.c -- growable byte buffers and bounds-checked readers.
 * SPDX-License-Identifier: MIT
 *
 * The codec, the channels and the scheduler all build messages here. Growth
 * doubles, so appending is amortised O(1); readers never step outside the
 * bytes they were given. No Lua here: lbuf.c has the appenders that raise. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "buf.h"

int mpe__buf_grow(mpe_buf *b, size_t extra)
{
    if (b->cap - b->n >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->n) {
        errno = ENOMEM;
        return -1;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void mpe__buf_free(mpe_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}


void mpe__rd_init(mpe_rd *r, const void *p, size_t n)
{
    r->p = p;
    r->n = n;
    r->pos = 0;
}

int mpe__rd_bytes(mpe_rd *r, size_t n, const unsigned char **out)
{
    if (r->n - r->pos < n)
        return -1;
    *out = r->p + r->pos;
    r->pos += n;
    return 0;
}

int mpe__rd_u8(mpe_rd *r, unsigned *out)
{
    if (r->pos >= r->n)
        return -1;
    *out = r->p[r->pos++];
    return 0;
}

int mpe__rd_u32(mpe_rd *r, uint32_t *out)
{
    const unsigned char *s;
    if (mpe__rd_bytes(r, 4, &s) != 0)
        return -1;
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | s[i];
    *out = v;
    return 0;
}

int mpe__rd_u64(mpe_rd *r, uint64_t *out)
{
    if (r->n - r->pos < 8)
        return -1;
    const unsigned char *s = r->p + r->pos;
    r->pos += 8;
    if (MPE_LE) {
        memcpy(out, s, 8);
        return 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | s[i];
    *out = v;
    return 0;
}

int mpe__rd_f64(mpe_rd *r, double *out)
{
    uint64_t u;
    if (mpe__rd_u64(r, &u) != 0)
        return -1;
    memcpy(out, &u, sizeof *out);
    return 0;
}

int mpe__rd_varint(mpe_rd *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        unsigned c;
        if (mpe__rd_u8(r, &c) != 0)
            return -1;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1; /* more than 10 bytes: malformed */
}
