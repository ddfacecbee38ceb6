/* fdio.h -- bytes with descriptors over Unix stream sockets: the one place
 * that calls sendmsg/recvmsg with SCM_RIGHTS (fdio.c). Lua-free.
 * SPDX-License-Identifier: MIT
 *
 * A message's descriptors ride on its first bytes, at most MPE_FDIO_BATCH
 * (the kernel's SCM_MAX_FD) per sendmsg: batch k on byte k. So a message
 * needs at least one byte per batch. The kernel ends a read after the bytes
 * that carried descriptors, so the receiver knows the stream position each
 * batch came with (mpe_fdin) and hands a frame exactly the descriptors that
 * rode on its bytes, in the order they were sent (mpe__fdio_claim). */
#ifndef MPE_FDIO_H
#define MPE_FDIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Descriptors attached to one sendmsg: Linux's SCM_MAX_FD. */
#define MPE_FDIO_BATCH 253

/* A growable list of descriptors travelling with a message. All-zero is the
 * empty list; whoever embeds it releases it with mpe__fds_close. A slot may
 * hold -1 (taken). Moving the struct moves ownership: zero the source. */
typedef struct mpe_fds {
    int *fd;
    int n, cap;
} mpe_fds;

/* Append fd. Takes fd in every case: 0, or -1 (errno ENOMEM) with fd closed. */
int mpe__fds_add(mpe_fds *f, int fd);
/* Append all of src to dst in order; src becomes empty. 0, or -1 (ENOMEM)
 * with src's descriptors closed. */
int mpe__fds_move(mpe_fds *dst, mpe_fds *src);
/* Close every slot >= 0 and free the list; f is empty and reusable. */
void mpe__fds_close(mpe_fds *f);
/* Close slots [from, n) and truncate to from; the memory is kept. */
void mpe__fds_truncate(mpe_fds *f, int from);

/* ---- sending ------------------------------------------------------------------ */

/* Send the start of a message of n bytes with nfds descriptors: every
 * descriptor batch, then as many further bytes as the socket takes. Retries
 * EINTR, never raises SIGPIPE. flags may hold MSG_DONTWAIT. Returns the bytes
 * sent: 0 only when nothing went (MSG_DONTWAIT, the socket full); > 0 means
 * every descriptor went (batches after the first wait for room) and the
 * caller sends the rest, from p + result, without descriptors. -1 on error
 * (EPIPE, ECONNRESET: the peer is gone; EMSGSIZE: fewer bytes than batches;
 * ETOOMANYREFS). The descriptors stay the caller's: the receiver gets
 * duplicates. */
ssize_t mpe__fdio_send(int sock, const void *p, size_t n, const int *fds, int nfds, int flags);
/* The same for a message in up to 4 pieces, starting at its byte off (fds
 * only with off 0: a message's descriptors go with its first bytes). */
struct iovec;
ssize_t mpe__fdio_sendv(int sock, const struct iovec *iov, int niov, size_t off, const int *fds,
                        int nfds, int flags);
/* Send the whole message, waiting for room as needed. 0, or -1 with errno. */
int mpe__fdio_send_all(int sock, const void *p, size_t n, const int *fds, int nfds);

/* ---- receiving ---------------------------------------------------------------- */

/* Descriptors received on one stream, each with the stream position (byte
 * count since the stream began) of the byte it arrived with. All-zero is
 * empty; release with mpe__fdin_close. */
typedef struct mpe_fdin {
    mpe_fds fds;
    uint64_t *at;    /* at[i]: position of fds.fd[i] */
    int atcap;
    uint64_t pos;    /* bytes received so far */
} mpe_fdin;

/* One recvmsg (EINTR retried, descriptors close-on-exec) of up to n bytes into
 * p; descriptors go to fds in arrival order. Returns bytes read, 0 at EOF, -1
 * with errno: EAGAIN (MSG_DONTWAIT, nothing there), ENOMEM (no room for the
 * descriptors: those of this read are closed), EPROTO (MSG_CTRUNC: the
 * kernel dropped descriptors; those that came are closed), or recvmsg's.
 * flags may hold MSG_DONTWAIT and MSG_PEEK. fds may be NULL: descriptors are
 * then closed. */
ssize_t mpe__fdio_recvmsg(int sock, void *p, size_t n, mpe_fds *fds, int flags);
/* mpe__fdio_recvmsg for a stream whose frames claim their descriptors by
 * position: the descriptors go to in, each marked with the position of the
 * last byte of this read (which lies in the bytes that carried it). */
ssize_t mpe__fdio_recv(int sock, void *p, size_t n, mpe_fdin *in, int flags); /* in NULL: closed */
void mpe__fdin_close(mpe_fdin *in);
/* Move to out the descriptors that arrived with stream bytes [start, end),
 * in order; those from before start belong to frames that nobody claimed and
 * are closed. 0, or -1 (ENOMEM) with the claimed descriptors closed. */
int mpe__fdio_claim(mpe_fdin *in, uint64_t start, uint64_t end, mpe_fds *out);

/* Wait until sock is readable (POLLIN) or writable (POLLOUT), or for timeout
 * seconds (< 0: for ever). 1 ready (or hung up), 0 timeout, -1 error. */
int mpe__fdio_wait(int sock, short events, double timeout);

/* ---- bundles: more descriptors than one message may carry, in one ---------- */

/* A fresh socket holding fds[0..n) (duplicates); the caller sends that one
 * descriptor instead. Returns it, or -1 with errno. */
int mpe__fdio_bundle(const int *fds, int n);
/* Append to out duplicates of the n descriptors a bundle holds, without
 * taking them out of it (a reader that dies half-way leaves it whole). 0, or
 * -1 with errno (EPROTO: it holds fewer than n) and nothing appended. */
int mpe__fdio_unbundle(int bundle, int n, mpe_fds *out);

#endif
