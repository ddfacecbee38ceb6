/* frames.c -- the layouts of the pool protocol's frames, each encoder next
 * to its decoder, so that no other file knows a frame's byte offsets.
 * SPDX-License-Identifier: MIT
 *
 * Lua-free: the dispatcher thread builds frames too, and may not raise. The
 * wire is little-endian. */
#include <limits.h>
#include <string.h>
#include "frames.h"

int mpe__frames_put(mpe_buf *b, const void *s, size_t n)
{
    if (n == 0)
        return 0;
    if (mpe__buf_grow(b, n) != 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int put64(mpe_buf *b, uint64_t v)
{
    unsigned char s[8];
    for (int i = 0; i < 8; i++)
        s[i] = (unsigned char)(v >> (8 * i));
    return mpe__frames_put(b, s, 8);
}

static int put32(mpe_buf *b, uint32_t v)
{
    unsigned char s[4];
    for (int i = 0; i < 4; i++)
        s[i] = (unsigned char)(v >> (8 * i));
    return mpe__frames_put(b, s, 4);
}

static int put8(mpe_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    return mpe__frames_put(b, &c, 1);
}

/* The frame header [u32 length][u8 type]; the length is patched by end. */
static int begin(mpe_buf *b, unsigned type, size_t *start)
{
    *start = b->n;
    return put32(b, 0) || put8(b, type) ? -1 : 0;
}

/* A frame whose payload is one little-endian integer of the given bytes. */
static int one_int(mpe_buf *b, unsigned type, uint64_t v, int bytes)
{
    unsigned char d[8];
    size_t s;
    for (int i = 0; i < bytes; i++)
        d[i] = (unsigned char)(v >> (8 * i));
    if (begin(b, type, &s) || mpe__frames_put(b, d, (size_t)bytes))
        return -1;
    mpe__frame_end(b, s);
    return 0;
}

int mpe__frames_u64(mpe_buf *b, unsigned type, uint64_t v)
{
    return one_int(b, type, v, 8);
}

int mpe__frames_u32(mpe_buf *b, unsigned type, uint32_t v)
{
    return one_int(b, type, v, 4);
}

int mpe__frames_read_u64(const char *s, uint32_t len, uint64_t *v)
{
    mpe_rd r;
    mpe__rd_init(&r, s, len);
    return mpe__rd_u64(&r, v);
}

int mpe__frames_read_u32(const char *s, uint32_t len, uint32_t *v)
{
    mpe_rd r;
    mpe__rd_init(&r, s, len);
    return mpe__rd_u32(&r, v);
}

/* ---- function ------------------------------------------------------------------ */

int mpe__frames_func_begin(mpe_buf *b, uint64_t id, size_t *start)
{
    return begin(b, MPE_F_FUNC, start) || put64(b, id) ? -1 : 0;
}

int mpe__frames_func_read(mpe_rd *r, const char *s, uint32_t len, uint64_t *id)
{
    mpe__rd_init(r, s, len);
    return mpe__rd_u64(r, id);
}

/* ---- segments ------------------------------------------------------------------- */

int mpe__frames_segs(mpe_buf *b, const uint32_t *ids, int n)
{
    size_t s;
    if (begin(b, MPE_F_SEGS, &s) || put32(b, (uint32_t)n))
        return -1;
    for (int q = 0; q < n; q++)
        if (put32(b, ids[q]))
            return -1;
    mpe__frame_end(b, s);
    return 0;
}

int mpe__frames_segs_read(const char *s, uint32_t len, uint32_t *ids, int max)
{
    mpe_rd r;
    uint32_t n;
    mpe__rd_init(&r, s, len);
    if (mpe__rd_u32(&r, &n) || n > (uint32_t)max)
        return -1;
    for (uint32_t q = 0; q < n; q++)
        if (mpe__rd_u32(&r, &ids[q]))
            return -1;
    return (int)n;
}

/* ---- chunk ---------------------------------------------------------------------- */

int mpe__frames_chunk(mpe_buf *b, const mpe_chunk_head *h, const void *payload, size_t plen)
{
    size_t s;
    if (begin(b, MPE_F_CHUNK, &s) || put64(b, h->chunk) || put64(b, h->job) || put64(b, h->fn) ||
        put8(b, h->mode) || put8(b, h->kind) || put32(b, h->n) || put64(b, h->first))
        return -1;
    if (h->kind == MPE_K_RANGE) {
        if (put64(b, (uint64_t)h->rstart) || put64(b, (uint64_t)h->rstep))
            return -1;
    } else if (mpe__frames_put(b, payload, plen))
        return -1;
    mpe__frame_end(b, s);
    return 0;
}

int mpe__frames_chunk_read(mpe_rd *r, mpe_chunk_head *h)
{
    if (mpe__rd_u64(r, &h->chunk) || mpe__rd_u64(r, &h->job) || mpe__rd_u64(r, &h->fn) ||
        mpe__rd_u8(r, &h->mode) || mpe__rd_u8(r, &h->kind) || mpe__rd_u32(r, &h->n) ||
        mpe__rd_u64(r, &h->first))
        return -1;
    h->rstart = h->rstep = 0;
    if (h->kind == MPE_K_RANGE) {
        uint64_t a, s;
        if (mpe__rd_u64(r, &a) || mpe__rd_u64(r, &s))
            return -1;
        h->rstart = (int64_t)a;
        h->rstep = (int64_t)s;
    }
    return 0;
}

/* ---- an encoded item's head ------------------------------------------------------ */

/* Bytes of the varint k of an item's head. */
static size_t varint_len(uint64_t k)
{
    size_t n = 1;
    while (k >= 0x80) {
        k >>= 7;
        n++;
    }
    return n;
}

size_t mpe__frames_item_head_size(int k)
{
    return varint_len((uint64_t)k) + 4 * (size_t)k;
}

size_t mpe__frames_item_head(unsigned char *d, const uint32_t *ids, int k)
{
    unsigned char *s = d;
    uint64_t v = (uint64_t)k;
    for (; v >= 0x80; v >>= 7)
        *d++ = (unsigned char)(v | 0x80);
    *d++ = (unsigned char)v;
    for (int i = 0; i < k; i++)
        for (int b = 0; b < 4; b++)
            *d++ = (unsigned char)(ids[i] >> (8 * b));
    return (size_t)(d - s);
}

int mpe__frames_item_ids(const unsigned char *s, const unsigned char **ids)
{
    uint64_t k = 0;
    for (int shift = 0;; shift += 7) {
        unsigned c = *s++;
        k |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            break;
    }
    *ids = s;
    return (int)k;
}

uint32_t mpe__frames_item_id(const unsigned char *ids, int q)
{
    const unsigned char *v = ids + 4 * (size_t)q;
    return (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 24;
}

int mpe__frames_item_read(mpe_rd *r, const unsigned char **ids, int *k)
{
    uint64_t n;
    /* Bounded by the bytes left, so k x 4 ids are all there. */
    if (mpe__rd_varint(r, &n) || n > (r->n - r->pos) / 4 || n > INT_MAX)
        return -1;
    *ids = r->p + r->pos;
    r->pos += 4 * (size_t)n;
    *k = (int)n;
    return 0;
}

/* ---- result --------------------------------------------------------------------- */

int mpe__frames_result(mpe_buf *b, const mpe_result_head *h, const void *payload, size_t plen)
{
    size_t s;
    if (begin(b, MPE_F_RESULT, &s) || put64(b, h->chunk) || put32(b, h->from) || put32(b, h->count) ||
        put8(b, h->flags) || put64(b, h->ns) || mpe__frames_put(b, payload, plen))
        return -1;
    mpe__frame_end(b, s);
    return 0;
}

int mpe__frames_result_read(const char *s, uint32_t len, mpe_result_head *h, size_t *payload)
{
    mpe_rd r;
    mpe__rd_init(&r, s, len);
    if (mpe__rd_u64(&r, &h->chunk) || mpe__rd_u32(&r, &h->from) || mpe__rd_u32(&r, &h->count) ||
        mpe__rd_u8(&r, &h->flags) || mpe__rd_u64(&r, &h->ns))
        return -1;
    *payload = r.pos;
    return 0;
}

int mpe__frames_record(mpe_buf *b, unsigned status, uint64_t nvals)
{
    unsigned char s[11];
    size_t n = 0;
    s[n++] = (unsigned char)status;
    do {
        unsigned char c = nvals & 0x7f;
        nvals >>= 7;
        s[n++] = c | (nvals ? 0x80 : 0);
    } while (nvals);
    return mpe__frames_put(b, s, n);
}

int mpe__frames_record_read(mpe_rd *r, unsigned *status, uint64_t *nvals)
{
    return mpe__rd_u8(r, status) || mpe__rd_varint(r, nvals) ? -1 : 0;
}

/* ---- initializer failure ------------------------------------------------------- */

int mpe__frames_initfail(mpe_buf *b, const char *record, size_t n)
{
    size_t s;
    if (n < MPE_RECORD_ERROR_HEAD || begin(b, MPE_F_INITFAIL, &s) ||
        mpe__frames_put(b, record + MPE_RECORD_ERROR_HEAD, n - MPE_RECORD_ERROR_HEAD))
        return -1;
    mpe__frame_end(b, s);
    return 0;
}

int mpe__frames_from_worker(const mpe_buf *b, size_t off)
{
    if (b->n - off < MPE_FRAME_HDR)
        return -1;
    const unsigned char *h = (const unsigned char *)b->p + off;
    uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    return (h[4] == MPE_F_RESULT || h[4] == MPE_F_INITFAIL) && n <= (1u << 30);
}
