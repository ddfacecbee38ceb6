/* lbuf.h -- byte buffers as Lua sees them: appenders that raise, buffers and descriptor lists owned by Lua values (lbuf.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_LBUF_H
#define MPE_LBUF_H

#include "compat.h"
#include "buf.h"

/* Like mpe__buf_grow, but raises "mpe: not enough memory" in L on failure. */
void mpe__buf_lgrow(lua_State *L, mpe_buf *b, size_t extra);
/* Push a userdata owning a fresh, empty buffer (freed by its __gc/__close). */
mpe_buf *mpe__buf_box(lua_State *L);

/* Appenders that raise in L when memory runs out. Integers are little-endian. */
void mpe__buf_put(lua_State *L, mpe_buf *b, const void *p, size_t n);
void mpe__buf_put_u8(lua_State *L, mpe_buf *b, unsigned v);
void mpe__buf_put_u32(lua_State *L, mpe_buf *b, uint32_t v);
void mpe__buf_put_u64(lua_State *L, mpe_buf *b, uint64_t v);
void mpe__buf_put_f64(lua_State *L, mpe_buf *b, double v);
void mpe__buf_put_varint(lua_State *L, mpe_buf *b, uint64_t v);

/* Push a userdata owning an empty descriptor list: its __gc closes what is
 * still in it (set n to 0 after taking them). */
mpe_fds *mpe__fds_box(lua_State *L);

#endif
