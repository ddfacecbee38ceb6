/* pipe.h -- the ends of an mpe.pipe (pipe.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_PIPE_H
#define MPE_PIPE_H

#include <stddef.h>
#include "buf.h"
#include "err.h"
#include "waitctl.h"

/* pipe.c. One end of an mpe.pipe: a stream socket carrying frames
 * [u32 length][u32 descriptor count][payload], the descriptors attached to the
 * frame's first byte. The struct lives in the binding's userdata. */
typedef struct mpe_pipe {
    int fd;        /* -1 once closed */
    mpe_buf in;    /* received bytes; in.p[off..] is not consumed yet */
    size_t off;
    mpe_fdin q;    /* received descriptors not yet handed out, with their positions */
    int eof;
    int cut; /* a send stopped mid-frame: this end's sending side is shut down */
} mpe_pipe;
void mpe__pipe_init(mpe_pipe *p);
/* Two connected ends. 0, or -1 with e set. */
int mpe__pipe_pair(mpe_pipe *a, mpe_pipe *b, mpe_err *e);
/* Send one frame (fds are closed in every case). Blocks while the socket is
 * full, asking w every 100 ms. Interrupted after the first byte went, the
 * frame cannot be finished: the sending side is shut down (the receiver gets
 * an error for the partial frame) and later sends fail. MPE_WAIT_OK,
 * MPE_WAIT_INTERRUPTED, MPE_IPC_CLOSED or MPE_WAIT_ERROR. */
int mpe__pipe_send(mpe_pipe *p, const void *data, size_t n, mpe_fds *fds, const mpe_waitctl *w,
                   mpe_err *e);
/* Receive one frame: *data and *n point into p->in until the next call on p, its
 * descriptors are appended to fds. Returns as mpe__queue_get. */
int mpe__pipe_recv(mpe_pipe *p, double timeout, const mpe_waitctl *w, const void **data,
                   size_t *n, mpe_fds *fds, mpe_err *e);
/* 1 when recv would not block (a whole frame, or the other end closed), 0 at
 * the deadline, MPE_WAIT_INTERRUPTED, MPE_WAIT_ERROR. */
int mpe__pipe_poll(mpe_pipe *p, double timeout, const mpe_waitctl *w, mpe_err *e);
/* Close the end and free its buffers. Idempotent. */
void mpe__pipe_close(mpe_pipe *p);

#endif
