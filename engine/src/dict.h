/* dict.h -- shared dicts (dict.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_DICT_H
#define MPE_DICT_H

#include <stddef.h>
#include "buf.h"
#include "err.h"
#include "shm.h"
#include "waitctl.h"

/* dict.c. A dict is an mpe_shm_obj of kind MPE_SHM_DICT (its lock and the
 * layout of its table) plus a growable memfd holding an open-addressing hash
 * table of records [key bytes][value bytes]; o->data is this process's
 * mapping of that file. Keys and values are opaque bytes (codec encodings). */
mpe_shm_obj *mpe__dict_new(mpe_err *e);
int mpe__dict_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e);
mpe_shm_obj *mpe__dict_ref_read(mpe_rd *r, mpe_fds *fds, mpe_err *e);
void mpe__dict_drop(mpe_shm_obj *o);
/* Take the dict's lock (recursive; a dead holder's damage is repaired) and
 * map its current data. MPE_WAIT_OK, MPE_WAIT_INTERRUPTED or MPE_WAIT_ERROR. */
int mpe__dict_lock(mpe_shm_obj *o, const mpe_waitctl *w, mpe_err *e);
void mpe__dict_unlock(mpe_shm_obj *o);
/* The rest need the lock. Pointers into the table stay valid until the next
 * call on the dict. find: 1 and the value, or 0. */
int mpe__dict_find(mpe_shm_obj *o, const void *k, size_t kn, const void **v, size_t *vn);
/* Insert or replace. 0, or -1 with e set (the dict unchanged). */
int mpe__dict_set(mpe_shm_obj *o, const void *k, size_t kn, const void *v, size_t vn, mpe_err *e);
/* 1 if the key was there. */
int mpe__dict_delete(mpe_shm_obj *o, const void *k, size_t kn);
size_t mpe__dict_count(mpe_shm_obj *o);
/* Entries in table order: *pos starts at 0; 1 and the entry, 0 at the end. */
int mpe__dict_next(mpe_shm_obj *o, size_t *pos, const void **k, size_t *kn, const void **v,
                   size_t *vn);
int mpe__dict_clear(mpe_shm_obj *o, mpe_err *e);

#endif
