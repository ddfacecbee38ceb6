/* array.c -- shared typed arrays and values: the element type table, the
 * layout in shared memory, conversions with range checks, atomic add.
 * SPDX-License-Identifier: MIT
 *
 * An array is one shared object: a 64-byte header (kind, ctype, shape) and
 * the elements, row-major. A value is the same with ndim 0 and one element.
 * Single reads and writes are relaxed atomics (no torn values, no ordering);
 * add is a compare-and-swap loop, so it can refuse an overflow and leave the
 * element as it was. Bulk operations (fill, sum) are plain loops. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "array.h"
#include "err.h"
#include "shm.h"

#define DATA_OFFSET 64

/* The one element-type table. */
static const mpe_ctype ctypes[] = {
    {"int8", "b", 1, MPE_CT_SIGNED},    {"uint8", "B", 1, MPE_CT_UNSIGNED},
    {"int16", "h", 2, MPE_CT_SIGNED},   {"uint16", "H", 2, MPE_CT_UNSIGNED},
    {"int32", "i", 4, MPE_CT_SIGNED},   {"uint32", "I", 4, MPE_CT_UNSIGNED},
    {"int64", "lq", 8, MPE_CT_SIGNED},  {"uint64", "LQ", 8, MPE_CT_UNSIGNED},
    {"float", "f", 4, MPE_CT_FLOAT},    {"double", "d", 8, MPE_CT_FLOAT},
};
#define NCTYPES ((int)(sizeof ctypes / sizeof ctypes[0]))

typedef struct array_hdr {
    mpe_shm_objhdr h;
    uint32_t ctype; /* index in ctypes */
    uint32_t ndim;  /* 0 (value), 1 or 2 */
    uint64_t rows, cols;
} array_hdr;

_Static_assert(sizeof(array_hdr) <= DATA_OFFSET, "array header fits before the data");

const mpe_ctype *mpe__array_ctype(const char *name)
{
    for (int i = 0; i < NCTYPES; i++) {
        if (strcmp(name, ctypes[i].name) == 0)
            return &ctypes[i];
        if (name[0] && !name[1] && strchr(ctypes[i].codes, name[0]))
            return &ctypes[i];
    }
    return NULL;
}

mpe_shm_obj *mpe__array_new(const mpe_ctype *t, int ndim, size_t rows, size_t cols, mpe_err *e)
{
    size_t n = ndim == 0 ? 1 : ndim == 1 ? rows : rows * cols;
    if (ndim == 2 && cols && n / cols != rows) {
        mpe__seterr(e, "%zu x %zu elements is too many", rows, cols);
        return NULL;
    }
    if (n > ((size_t)1 << 40) / t->size) {
        mpe__seterr(e, "%zu elements of %s is too large", n, t->name);
        return NULL;
    }
    mpe_shm_obj *o = mpe__shm_new(MPE_SHM_ARRAY, DATA_OFFSET + n * t->size, e);
    if (!o)
        return NULL;
    array_hdr *h = o->p;
    h->ctype = (uint32_t)(t - ctypes);
    h->ndim = (uint32_t)ndim;
    h->rows = ndim == 0 ? 1 : rows;
    h->cols = ndim == 2 ? cols : 1;
    o->data = (char *)o->p + DATA_OFFSET;
    o->n = n;
    o->type = (int)h->ctype;
    return o;
}

int mpe__array_attach(mpe_shm_obj *o, mpe_err *e)
{
    const array_hdr *h = o->p;
    size_t size = mpe__shm_size(o);
    if (h->ctype >= (uint32_t)NCTYPES || h->ndim > 2 || size < DATA_OFFSET)
        return mpe__seterr(e, "malformed shared array header");
    uint64_t n = h->rows * h->cols;
    if ((h->cols && n / h->cols != h->rows) || (h->ndim == 0 && n != 1) ||
        n > (size - DATA_OFFSET) / ctypes[h->ctype].size)
        return mpe__seterr(e, "malformed shared array shape");
    o->data = (char *)o->p + DATA_OFFSET;
    o->n = (size_t)n;
    o->type = (int)h->ctype;
    return 0;
}

const mpe_ctype *mpe__array_type(const mpe_shm_obj *o)
{
    return &ctypes[o->type];
}

int mpe__array_shape(const mpe_shm_obj *o, size_t *rows, size_t *cols)
{
    const array_hdr *h = o->p;
    *rows = (size_t)h->rows;
    *cols = (size_t)h->cols;
    return (int)h->ndim;
}

/* ---- single elements ------------------------------------------------------ */

#define LOAD(T, p, i) __atomic_load_n(&((T *)(p))[i], __ATOMIC_RELAXED)
#define STORE(T, p, i, v) __atomic_store_n(&((T *)(p))[i], (T)(v), __ATOMIC_RELAXED)

static mpe_num num_int(int64_t v)
{
    mpe_num r = {1, v, 0};
    return r;
}

static mpe_num num_float(double v)
{
    mpe_num r = {0, 0, v};
    return r;
}

/* An element's bits (as stored, zero-extended) as a number. */
static mpe_num decode_bits(int type, uint64_t b)
{
    float f;
    double d;
    uint32_t w;
    switch (type) {
    case 0: return num_int((int8_t)b);
    case 1: return num_int((uint8_t)b);
    case 2: return num_int((int16_t)b);
    case 3: return num_int((uint16_t)b);
    case 4: return num_int((int32_t)b);
    case 5: return num_int((uint32_t)b);
    case 6: return num_int((int64_t)b);
    case 7: return b <= INT64_MAX ? num_int((int64_t)b) : num_float((double)b);
    case 8:
        w = (uint32_t)b;
        memcpy(&f, &w, sizeof f);
        return num_float(f);
    default:
        memcpy(&d, &b, sizeof d);
        return num_float(d);
    }
}

mpe_num mpe__array_get(const mpe_shm_obj *o, size_t i)
{
    const void *p = o->data;
    switch (o->type) {
    case 0: return num_int(LOAD(int8_t, p, i));
    case 1: return num_int(LOAD(uint8_t, p, i));
    case 2: return num_int(LOAD(int16_t, p, i));
    case 3: return num_int(LOAD(uint16_t, p, i));
    case 4: return num_int(LOAD(int32_t, p, i));
    case 5: return num_int(LOAD(uint32_t, p, i));
    case 6: return num_int(LOAD(int64_t, p, i));
    case 7: return decode_bits(7, LOAD(uint64_t, p, i));
    case 8: return decode_bits(8, LOAD(uint32_t, p, i));
    default: return decode_bits(9, LOAD(uint64_t, p, i));
    }
}

void mpe__array_put(mpe_shm_obj *o, size_t i, uint64_t b)
{
    void *p = o->data;
    switch (mpe__array_type(o)->size) {
    case 1: STORE(uint8_t, p, i, b); break;
    case 2: STORE(uint16_t, p, i, b); break;
    case 4: STORE(uint32_t, p, i, b); break;
    default: STORE(uint64_t, p, i, b); break;
    }
}

static const char *what(const mpe_shm_obj *o)
{
    const array_hdr *h = o->p;
    return h->ndim == 0 ? "value" : "array";
}

static void fmt_num(char *out, size_t size, mpe_num v)
{
    if (v.isint)
        snprintf(out, size, "%lld", (long long)v.i);
    else
        snprintf(out, size, "%.14g", v.d);
}

/* Integer limits of a type: [lo, hi] for signed, [0, uhi] for unsigned. */
static void int_limits(const mpe_ctype *t, int64_t *lo, int64_t *hi, uint64_t *uhi)
{
    unsigned bits = t->size * 8;
    if (t->cls == MPE_CT_SIGNED) {
        *hi = bits == 64 ? INT64_MAX : (int64_t)((UINT64_C(1) << (bits - 1)) - 1);
        *lo = -*hi - 1;
        *uhi = (uint64_t)*hi;
    } else {
        *lo = 0;
        *uhi = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
        *hi = *uhi > INT64_MAX ? INT64_MAX : (int64_t)*uhi;
    }
}

static int range_error(const mpe_shm_obj *o, mpe_num v, mpe_err *e)
{
    const mpe_ctype *t = mpe__array_type(o);
    int64_t lo, hi;
    uint64_t uhi;
    int_limits(t, &lo, &hi, &uhi);
    char s[48];
    fmt_num(s, sizeof s, v);
    if (t->cls == MPE_CT_SIGNED)
        return mpe__seterr(e, "value %s out of range for %s (%lld..%lld)", s, t->name,
                           (long long)lo, (long long)hi);
    return mpe__seterr(e, "value %s out of range for %s (0..%llu)", s, t->name,
                       (unsigned long long)uhi);
}

int mpe__array_check(const mpe_shm_obj *o, mpe_num v, uint64_t *bits, mpe_err *e)
{
    const mpe_ctype *t = mpe__array_type(o);
    if (t->cls == MPE_CT_FLOAT) {
        double d = v.isint ? (double)v.i : v.d;
        if (t->size == 4) {
            float f = (float)d;
            uint32_t w;
            memcpy(&w, &f, sizeof w);
            *bits = w;
        } else {
            memcpy(bits, &d, sizeof d);
        }
        return 0;
    }
    int64_t lo, hi;
    uint64_t uhi;
    int_limits(t, &lo, &hi, &uhi);
    if (!v.isint) {
        double d = v.d;
        if (d != floor(d) || isinf(d)) {
            char s[48];
            fmt_num(s, sizeof s, v);
            return mpe__seterr(e, "value %s is not an integer (%s of %s)", s, what(o), t->name);
        }
        /* Integral: exact bounds (2^63 and 2^64 are exact doubles). */
        if (t->cls == MPE_CT_UNSIGNED && t->size == 8 && d >= 9223372036854775808.0) {
            if (d >= 18446744073709551616.0)
                return range_error(o, v, e);
            *bits = (uint64_t)d;
            return 0;
        }
        if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return range_error(o, v, e);
        v = num_int((int64_t)d);
    }
    if (v.i < lo || v.i > hi) {
        return range_error(o, v, e);
    }
    *bits = (uint64_t)v.i;
    if (t->size < 8)
        *bits &= (UINT64_C(1) << (t->size * 8)) - 1;
    return 0;
}

/* ---- atomic add ------------------------------------------------------------- */

static uint64_t load_bits(const mpe_shm_obj *o, size_t i)
{
    const void *p = o->data;
    switch (mpe__array_type(o)->size) {
    case 1: return LOAD(uint8_t, p, i);
    case 2: return LOAD(uint16_t, p, i);
    case 4: return LOAD(uint32_t, p, i);
    default: return LOAD(uint64_t, p, i);
    }
}

static int cas_bits(mpe_shm_obj *o, size_t i, uint64_t *expected, uint64_t desired)
{
    void *p = o->data;
    switch (mpe__array_type(o)->size) {
    case 1: {
        uint8_t x = (uint8_t)*expected;
        int ok = __atomic_compare_exchange_n(&((uint8_t *)p)[i], &x, (uint8_t)desired, 0,
                                             __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        *expected = x;
        return ok;
    }
    case 2: {
        uint16_t x = (uint16_t)*expected;
        int ok = __atomic_compare_exchange_n(&((uint16_t *)p)[i], &x, (uint16_t)desired, 0,
                                             __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        *expected = x;
        return ok;
    }
    case 4: {
        uint32_t x = (uint32_t)*expected;
        int ok = __atomic_compare_exchange_n(&((uint32_t *)p)[i], &x, (uint32_t)desired, 0,
                                             __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        *expected = x;
        return ok;
    }
    default:
        return __atomic_compare_exchange_n(&((uint64_t *)p)[i], expected, desired, 0,
                                           __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    }
}

/* delta as an int64 for an integer array: integral floats accepted. */
static int delta_int(const mpe_shm_obj *o, mpe_num delta, int64_t *out, mpe_err *e)
{
    if (delta.isint) {
        *out = delta.i;
        return 0;
    }
    double d = delta.d;
    char s[48];
    fmt_num(s, sizeof s, delta);
    if (d != floor(d) || isinf(d))
        return mpe__seterr(e, "delta %s is not an integer (%s of %s)", s, what(o),
                           mpe__array_type(o)->name);
    if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return mpe__seterr(e, "delta %s out of range", s);
    *out = (int64_t)d;
    return 0;
}

int mpe__array_add(mpe_shm_obj *o, size_t i, mpe_num delta, mpe_num *out, mpe_err *e)
{
    const mpe_ctype *t = mpe__array_type(o);
    int64_t di = 0;
    if (t->cls != MPE_CT_FLOAT && delta_int(o, delta, &di, e) != 0)
        return -1;
    uint64_t cur = load_bits(o, i);
    for (;;) {
        uint64_t next = 0; /* set on every path below; gcc -O3 cannot see it */
        if (t->cls == MPE_CT_FLOAT) {
            double s = decode_bits(o->type, cur).d + (delta.isint ? (double)delta.i : delta.d);
            mpe__array_check(o, num_float(s), &next, e); /* cannot fail for floats */
        } else if (t->cls == MPE_CT_UNSIGNED && t->size == 8) {
            /* Unsigned 64-bit arithmetic: the sum may exceed INT64_MAX. */
            uint64_t mag = di >= 0 ? (uint64_t)di : (uint64_t)(-(di + 1)) + 1;
            if (di >= 0 ? cur > UINT64_MAX - mag : mag > cur)
                return range_error(o, num_float((double)cur + (double)di), e);
            next = di >= 0 ? cur + mag : cur - mag;
        } else {
            int64_t s;
            if (__builtin_add_overflow(decode_bits(o->type, cur).i, di, &s))
                return range_error(o, num_float((double)decode_bits(o->type, cur).i + (double)di), e);
            if (mpe__array_check(o, num_int(s), &next, e) != 0)
                return -1;
        }
        if (cas_bits(o, i, &cur, next)) {
            *out = decode_bits(o->type, next);
            return 0;
        }
    }
}

/* ---- bulk operations ---------------------------------------------------------- */

void mpe__array_fill(mpe_shm_obj *o, size_t from, size_t to, uint64_t b)
{
    unsigned char *p = o->data;
    size_t k;
    switch (mpe__array_type(o)->size) {
    case 1:
        memset(p + from, (int)(uint8_t)b, to - from);
        break;
    case 2:
        for (k = from; k < to; k++)
            ((uint16_t *)p)[k] = (uint16_t)b;
        break;
    case 4:
        for (k = from; k < to; k++)
            ((uint32_t *)p)[k] = (uint32_t)b;
        break;
    default:
        for (k = from; k < to; k++)
            ((uint64_t *)p)[k] = b;
        break;
    }
}

#define SUM_INTS(T)                                      \
    for (k = from; k < to; k++)                          \
        acc += (__int128)((const T *)p)[k];              \
    break

mpe_num mpe__array_sum(const mpe_shm_obj *o, size_t from, size_t to)
{
    const void *p = o->data;
    size_t k;
    if (mpe__array_type(o)->cls == MPE_CT_FLOAT) {
        double s = 0;
        if (o->type == 8)
            for (k = from; k < to; k++)
                s += ((const float *)p)[k];
        else
            for (k = from; k < to; k++)
                s += ((const double *)p)[k];
        return num_float(s);
    }
    /* 128 bits cannot overflow for any array that fits in memory. */
    __extension__ __int128 acc = 0;
    switch (o->type) {
    case 0: SUM_INTS(int8_t);
    case 1: SUM_INTS(uint8_t);
    case 2: SUM_INTS(int16_t);
    case 3: SUM_INTS(uint16_t);
    case 4: SUM_INTS(int32_t);
    case 5: SUM_INTS(uint32_t);
    case 6: SUM_INTS(int64_t);
    default: SUM_INTS(uint64_t);
    }
    if (acc >= INT64_MIN && acc <= INT64_MAX)
        return num_int((int64_t)acc);
    return num_float((double)acc);
}
