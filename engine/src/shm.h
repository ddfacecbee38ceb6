/* shm.h -- shared-memory objects in memfd segments (shm.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_SHM_H
#define MPE_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "err.h"

/* Shared objects live in memfd segments mapped MAP_SHARED (never in /dev/shm):
 * small ones cut from slabs, large ones in a segment each. A process sees each
 * object through one mpe_shm_obj (cached per segment and offset, counted by
 * the userdata that point to it); the last reference unmaps. Nothing shared is
 * ever destroyed explicitly: the kernel frees a segment with its last mapping. */
typedef struct mpe_seg mpe_seg; /* a mapped segment (shm.c) */

/* Object kinds, stored in the shared header and checked on decode. */
enum {
    MPE_SHM_ARRAY = 1, /* arrays and values (a value is a 0-dimensional array) */
    MPE_SHM_LOCK,
    MPE_SHM_RLOCK,
    MPE_SHM_SEMAPHORE,
    MPE_SHM_EVENT,
    MPE_SHM_CONDITION,
    MPE_SHM_BARRIER
};

/* Every shared object starts with this header (written by mpe__shm_new). */
typedef struct mpe_shm_objhdr {
    uint32_t magic;
    uint32_t kind;
    uint64_t size;    /* bytes, header included */
    int32_t creator;  /* pid of the creating process */
    uint32_t reserved;
} mpe_shm_objhdr;

/* One shared object as this process sees it. */
typedef struct mpe_shm_obj {
    void *p;                        /* the object (its mpe_shm_objhdr) in the mapping */
    mpe_seg *seg;
    size_t off;                     /* offset of p in the segment */
    uint32_t kind;
    pid_t creator;
    int refs;                       /* references held in this process */
    struct mpe_shm_obj *next, *prev; /* the segment's live objects */
    void *data;                     /* owner's cache of immutable facts: */
    size_t n;                       /*   arrays: elements, element count, */
    int type;                       /*   ctype index */
} mpe_shm_obj;

/* A zero-filled object of size bytes (header included) with one reference.
 * Returns NULL and sets e on failure. */
mpe_shm_obj *mpe__shm_new(uint32_t kind, size_t size, mpe_err *e);
void mpe__shm_ref(mpe_shm_obj *o);
/* Drop one reference; the last one frees o, and the last object of a segment
 * unmaps it and closes its descriptor. */
void mpe__shm_unref(mpe_shm_obj *o);
/* The object's size in bytes, and its segment's unique id (pid << 32 | n). */
size_t mpe__shm_size(const mpe_shm_obj *o);
uint64_t mpe__shm_id(const mpe_shm_obj *o);
/* Append a reference to o to b and a duplicate of its segment's descriptor
 * to fds (once per message). The duplicates belong to the message: whoever
 * sends it closes them afterwards (so a message may outlive the object).
 * 0, or -1 with e set. */
int mpe__shm_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e);
/* Read a reference written by mpe__shm_ref_write and return its object with
 * one more reference, mapping the segment if this process has not yet (from a
 * duplicate of the descriptor in fds: the slots stay the caller's to close).
 * Returns NULL and sets e on malformed input or a kind other than kind. */
mpe_shm_obj *mpe__shm_ref_read(mpe_rd *r, mpe_fds *fds, uint32_t kind, mpe_err *e);
/* This process's pid, cached (refreshed in forked children). */
pid_t mpe__shm_self(void);
/* Segments mapped and objects referenced by this process (tests). */
void mpe__shm_stats(int *segments, int *objects);

#endif
