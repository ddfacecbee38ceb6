/* protocol.h -- the frames between a pool and its workers (layouts; header helpers in transport.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_PROTOCOL_H
#define MPE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include "compat.h"
#include "buf.h"

/* Frames between the pool and its workers: [u32 payload length][u8 type][payload].
 * The scheduler never touches sockets itself: it calls the transport. */
#define MPE_FRAME_HDR 5
enum {
    /* parent -> worker */
    MPE_F_FUNC = 1,  /* [u64 fn id][encoded function]                                      */
    MPE_F_DROP,      /* [u64 fn id]: forget a function                                     */
    MPE_F_CHUNK,     /* [u64 chunk id][u64 job id][u64 fn id][u8 mode][u8 kind][u32 n]
                        [u64 first: the job's 0-based index of item 0][payload] */
    MPE_F_FDS,       /* [u64 function id], sent alone with descriptors attached: they
                        decode that function's upvalues */
    MPE_F_SEGDROP,   /* [u32 segment id]: close the pool's segment id (it may be reused) */
    MPE_F_SEGS,      /* [u32 n][n x u32 segment id], sent alone with n descriptors
                        attached: the pool's shared segments by id, each sent once per
                        worker. Encoded items (MPE_K_ENC) each start with
                        [varint k][k x u32 segment id]: their descriptor slots 0..k-1 */
    MPE_F_STOP,      /* finish and exit                                                    */
    /* worker -> parent */
    MPE_F_RESULT,    /* [u64 chunk id][u32 from][u32 count][u8 flags][u64 elapsed ns][payload] */
    MPE_F_INITFAIL   /* [encoded error table]: the initializer failed                       */
};
/* Chunk item kinds (how the items of a chunk are written). */
enum { MPE_K_RANGE = 1, MPE_K_INTS, MPE_K_FLOATS, MPE_K_ENC };
/* How a worker calls the function: fn(item), fn(unpack(item)), or all results of fn(unpack(item)). */
enum { MPE_M_MAP = 1, MPE_M_STAR, MPE_M_APPLY };
/* Or'ed into a MAP or STAR mode: the function id names a table {fn, array}
 * and each item's results go into the array's element (1-D) or row (2-D)
 * first + i instead of back to the pool (option out=). */
#define MPE_M_OUT 0x10
/* Result frame flags. */
#define MPE_R_FINAL 1   /* last frame of its chunk: elapsed ns is the chunk's run time */
#define MPE_R_INTS 2    /* payload: count packed int64 (each item one integer result) */
#define MPE_R_FLOATS 4  /* payload: count packed doubles */
#define MPE_R_ERRORS 8  /* at least one item failed */
#define MPE_R_FDS 16    /* sent alone, with the descriptors its values need */
#define MPE_R_NONE 32   /* no payload: count items succeeded, their results are in the out array */
/* Otherwise each item is [u8 status: 0 ok, 1 error][varint nvals][values], an error
 * carrying one value: the table {message=, traceback=, value=}. */

/* Read a frame header at b[off]: returns 1 and sets *type, *len when a whole
 * frame is buffered, 0 when more bytes are needed. */
int mpe__frame_peek(const mpe_buf *b, size_t off, unsigned *type, uint32_t *len);
/* Start a frame of the given type in b; mpe__frame_end patches its length. */
size_t mpe__frame_begin(lua_State *L, mpe_buf *b, unsigned type);
void mpe__frame_end(mpe_buf *b, size_t start);

#endif
