/* codec.h -- the codec: Lua values <-> bytes (codec.c, codec_link.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_CODEC_H
#define MPE_CODEC_H

#include "compat.h"
#include "buf.h"

/* The one wire format for tasks, results, queues, pipes and mpe.encode; see
 * docs/ARCHITECTURE.md. Errors are raised as Lua errors in L. */

/* Append the encoding of the value at idx to b. root names the value in error
 * paths ("args", "result", "value"). Descriptors of shared objects are
 * appended to fds; with fds NULL such objects raise. On error b may hold a
 * partial encoding: the caller truncates it (b->n) as needed. */
void mpe__encode(lua_State *L, int idx, mpe_buf *b, const char *root, mpe_fds *fds);
/* Decode one value at r's position, advance r and push the value. Raises
 * "mpe: decode: ..." on malformed input, never reads outside r. fds supplies
 * the descriptors that came with the message (NULL: none). */
void mpe__decode(lua_State *L, mpe_rd *r, mpe_fds *fds);
/* Set t[first + i] for i in 0..count-1 from count packed 8-byte little-endian
 * numbers at p (int64 when ints, else IEEE-754 doubles): the layout of a
 * T_TABLE_INT/T_TABLE_FLOAT array and of packed result frames. t is an
 * absolute stack index. Raises "mpe: decode: ..." when len < count * 8 or
 * first + count - 1 overflows; reads nothing past p[len). */
void mpe__decode_numbers(lua_State *L, int t, lua_Integer first, const void *p, size_t len,
                         size_t count, int ints);

/* A type of mpe userdata that travels by reference (shared arrays, locks,
 * queues...). Registered once per lua_State; found by the metatable's __name. */
typedef struct mpe_codec_type {
    const char *name;  /* the metatable's __name, e.g. "mpe.Array" */
    /* Write what the receiver needs to reach the object at idx; may add fds. Raises on failure. */
    void (*encode)(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds);
    /* Read what encode wrote, push the object. Raises on malformed input. */
    void (*decode)(lua_State *L, mpe_rd *r, mpe_fds *fds);
} mpe_codec_type;
void mpe__codec_add_type(lua_State *L, const mpe_codec_type *t);
/* Descriptor ownership: fds->fd[] holds the descriptors that came with a
 * message. A type's decode that keeps a descriptor takes it by setting its slot
 * to -1; after decoding, the caller closes every slot that is still >= 0. */

/* Nesting bound of the wire format (tables, functions, metatables, keys), on
 * both sides: deeper values raise "nesting deeper than 200 levels". */
#define MPE_MAX_DEPTH 200
/* First byte of mpe.encode's output; mpe.decode rejects any other. */
#define MPE_CODEC_VERSION 1
/* Draw the per-process MAC key now (luaopen_mpe does, so forked children
 * inherit it); functions only decode where the key is the same. */
void mpe__codec_init(void);
/* Replace the MAC key (fuzzer and tests; mpi.c gives every rank rank 0's). */
void mpe__codec_set_key(const unsigned char key[16]);
/* Copy out the MAC key (drawing it first if needed): mpi.c sends it to the other ranks. */
void mpe__codec_get_key(unsigned char key[16]);
/* Pass &mpe__codec_remote as the fds of mpe__encode when the value goes to
 * another MPI rank: shared objects and C functions that no name reaches then
 * raise, naming the path (descriptors and addresses mean nothing there). */
extern mpe_fds mpe__codec_remote;
/* mpe.register's work: relink the table at index mt by name. Raises when the
 * name is taken by another table or the table has another name. */
void mpe__codec_register_mt(lua_State *L, const char *name, int mt);
/* codec_link.c, for codec.c: names and keys. Each raises only on memory errors. */
/* SipHash-2-4 of p[0..n) under this process's key. */
uint64_t mpe__codec_mac(const void *p, size_t n);
/* Push the name of the C function at idx and return 1, or return 0 (push nothing). */
int mpe__codec_cfunc_name(lua_State *L, int idx);
/* Push the C function called name and return 1, or return 0 (push nothing). */
int mpe__codec_cfunc_find(lua_State *L, const char *name, size_t len);
/* The registered type of the userdata at idx, or the type called name; NULL if none. */
const mpe_codec_type *mpe__codec_type_of(lua_State *L, int idx);
const mpe_codec_type *mpe__codec_type_named(lua_State *L, const char *name, size_t len);
/* Push the registered name of the metatable at mt / the metatable registered
 * under name and return 1, or return 0 (push nothing). */
int mpe__codec_mt_name(lua_State *L, int mt);
int mpe__codec_mt_named(lua_State *L, const char *name, size_t len);

#endif
