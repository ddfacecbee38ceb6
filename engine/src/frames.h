/* frames.h -- every frame layout of the pool protocol, encoder next to
 * decoder: what the parent sends a worker (function, drop, descriptors,
 * segments, segment drop, chunk, stop) and what a worker sends back (result
 * with its per-item records, initializer failure). Never installed.
 * SPDX-License-Identifier: MIT
 *
 * Frame types, item kinds, modes and result flags are declared with the
 * frame header in protocol.h (MPE_F_*, MPE_K_*, MPE_M_*, MPE_R_*); the
 * header [u32 payload length][u8 type] is written by the transport's
 * mpe__frame_begin/end/peek. Every encoder here is Lua-free: 0, or -1 when
 * the buffer cannot grow (ENOMEM), the frame then possibly half written
 * (the caller cuts b->n back if it keeps the buffer). Decoders return 0, or
 * -1 on a malformed frame. */
#ifndef MPE_FRAMES_H
#define MPE_FRAMES_H

#include <stddef.h>
#include "buf.h"
#include "protocol.h"

/* Append n bytes. */
int mpe__frames_put(mpe_buf *b, const void *s, size_t n);

/* MPE_F_DROP, MPE_F_FDS (sent alone with descriptors), MPE_F_STOP: [u64 v]. */
int mpe__frames_u64(mpe_buf *b, unsigned type, uint64_t v);
int mpe__frames_read_u64(const char *s, uint32_t len, uint64_t *v);
/* MPE_F_SEGDROP: [u32 segment id]. */
int mpe__frames_u32(mpe_buf *b, unsigned type, uint32_t v);
int mpe__frames_read_u32(const char *s, uint32_t len, uint32_t *v);

/* MPE_F_FUNC: [u64 fn id][encoded function]. begin writes up to the
 * encoding (the caller encodes it into b, then mpe__frame_end(b, *start));
 * read leaves r at the encoding. */
int mpe__frames_func_begin(mpe_buf *b, uint64_t id, size_t *start);
int mpe__frames_func_read(mpe_rd *r, const char *s, uint32_t len, uint64_t *id);

/* MPE_F_SEGS: [u32 n][n x u32 segment id], sent alone with n descriptors,
 * at most MPE_FRAMES_SEGS_MAX (a sender with more sends several frames).
 * read: at most max ids into ids; returns n, or -1 if malformed. */
#define MPE_FRAMES_SEGS_MAX 64
int mpe__frames_segs(mpe_buf *b, const uint32_t *ids, int n);
int mpe__frames_segs_read(const char *s, uint32_t len, uint32_t *ids, int max);

/* MPE_F_CHUNK: [u64 chunk id][u64 job id][u64 fn id][u8 mode][u8 kind][u32 n]
 * [u64 first: the job's 0-based index of item 0][payload]; the payload is
 * [i64 start][i64 step] for MPE_K_RANGE, n x 8 bytes for INTS/FLOATS, and n
 * encoded items for ENC (each as mpe__frames_item_put writes it). */
typedef struct mpe_chunk_head {
    uint64_t chunk, job, fn;
    unsigned mode, kind;
    uint32_t n;
    uint64_t first;
    int64_t rstart, rstep; /* MPE_K_RANGE: the value of item first, and the step */
} mpe_chunk_head;
int mpe__frames_chunk(mpe_buf *b, const mpe_chunk_head *h, const void *payload, size_t plen);
/* Reads the head (and a range's start and step); r is left at the items. */
int mpe__frames_chunk_read(mpe_rd *r, mpe_chunk_head *h);

/* One encoded item of a store or a chunk: [varint k][k x u32 segment id]
 * [encoding], any number k: its descriptor slot q is the pool's segment
 * with the q-th id. */
size_t mpe__frames_item_head_size(int k);
/* Write the head at d (room for mpe__frames_item_head_size(k)); returns its size. */
size_t mpe__frames_item_head(unsigned char *d, const uint32_t *ids, int k);
/* The k of a head written by mpe__frames_item_head at s; *ids is set to its
 * ids, each read with mpe__frames_item_id. */
int mpe__frames_item_ids(const unsigned char *s, const unsigned char **ids);
uint32_t mpe__frames_item_id(const unsigned char *ids, int q);
/* Read an item's head from r: k, and *ids at its ids (inside r's input),
 * r left at the encoding; -1 if malformed. */
int mpe__frames_item_read(mpe_rd *r, const unsigned char **ids, int *k);

/* MPE_F_RESULT: [u64 chunk id][u32 from][u32 count][u8 flags][u64 elapsed ns]
 * [payload]. The payload is count packed int64 (MPE_R_INTS) or doubles
 * (MPE_R_FLOATS), nothing (MPE_R_NONE), or count item records. */
typedef struct mpe_result_head {
    uint64_t chunk;
    uint32_t from, count;
    unsigned flags;
    uint64_t ns;
} mpe_result_head;
#define MPE_RESULT_HEAD 25 /* bytes of the head after the frame header */
int mpe__frames_result(mpe_buf *b, const mpe_result_head *h, const void *payload, size_t plen);
/* Reads the head; *payload is the offset of the payload in s. */
int mpe__frames_result_read(const char *s, uint32_t len, mpe_result_head *h, size_t *payload);
/* A result's per-item record: [u8 status: 0 ok, 1 error][varint nvals][values];
 * an error carries one value, the table {message=, traceback=, value=}. */
int mpe__frames_record(mpe_buf *b, unsigned status, uint64_t nvals);
#define MPE_RECORD_ERROR_HEAD 2 /* bytes before an error record's value */
int mpe__frames_record_read(mpe_rd *r, unsigned *status, uint64_t *nvals);

/* MPE_F_INITFAIL: [encoded error table]; built from an error record. */
int mpe__frames_initfail(mpe_buf *b, const char *record, size_t n);

/* Whether the frame whose header starts at off in b could come from a worker
 * (a result or an initializer failure, under 1 GiB): 1, or 0 when its
 * header says it cannot, and -1 while the header is incomplete. */
int mpe__frames_from_worker(const mpe_buf *b, size_t off);

#endif
