/* internal.h -- declarations shared between the engine's files; never installed.
 * SPDX-License-Identifier: MIT
 *
 * Name tiers: mpe_* is public (mpe.h), mpe__<subsys>_* crosses files inside the
 * engine and is declared here, everything else is static to its file. */
#ifndef MPE_INTERNAL_H
#define MPE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "compat.h"
#include "mpe.h"

#define MPE_LIKELY(x) __builtin_expect(!!(x), 1)
#define MPE_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- errors (err.c) -------------------------------------------------------
 * Engine functions return 0 / -1 (or a pointer / NULL) and describe a failure
 * in an mpe_err the caller provides, naming the failing call and object. */
typedef struct mpe_err {
    char msg[256];
} mpe_err;

/* Format a message into e (e may be NULL). Preserves errno. Always returns -1. */
int mpe__seterr(mpe_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- byte buffers (buf.c) ---------------------------------------------------
 * A growable byte buffer. Memory comes from malloc; whoever embeds the struct
 * frees it with mpe__buf_free. A buffer that may be live when a Lua error is
 * raised must be owned by a Lua value (mpe__buf_box), never by a C local. */
typedef struct mpe_buf {
    char *p;
    size_t n, cap;
} mpe_buf;

/* Make room for `extra` more bytes. Returns 0, or -1 with errno ENOMEM. */
int mpe__buf_grow(mpe_buf *b, size_t extra);
/* Like mpe__buf_grow, but raises "mpe: not enough memory" in L on failure. */
void mpe__buf_lgrow(lua_State *L, mpe_buf *b, size_t extra);
void mpe__buf_free(mpe_buf *b);
/* Push a userdata owning a fresh, empty buffer (freed by its __gc/__close). */
mpe_buf *mpe__buf_box(lua_State *L);

/* Appenders that raise in L when memory runs out. Integers are little-endian. */
void mpe__buf_put(lua_State *L, mpe_buf *b, const void *p, size_t n);
void mpe__buf_put_u8(lua_State *L, mpe_buf *b, unsigned v);
void mpe__buf_put_u32(lua_State *L, mpe_buf *b, uint32_t v);
void mpe__buf_put_u64(lua_State *L, mpe_buf *b, uint64_t v);
void mpe__buf_put_f64(lua_State *L, mpe_buf *b, double v);
void mpe__buf_put_varint(lua_State *L, mpe_buf *b, uint64_t v);

/* A bounds-checked reader over bytes it does not own. Every getter returns 0,
 * or -1 when the input ends too early (then *out is left unchanged). */
typedef struct mpe_rd {
    const unsigned char *p;
    size_t n, pos;
} mpe_rd;

void mpe__rd_init(mpe_rd *r, const void *p, size_t n);
int mpe__rd_u8(mpe_rd *r, unsigned *out);
int mpe__rd_u32(mpe_rd *r, uint32_t *out);
int mpe__rd_u64(mpe_rd *r, uint64_t *out);
int mpe__rd_f64(mpe_rd *r, double *out);
int mpe__rd_varint(mpe_rd *r, uint64_t *out);
/* Point *out at the next n bytes (inside the reader's input) and skip them. */
int mpe__rd_bytes(mpe_rd *r, size_t n, const unsigned char **out);

/* ---- descriptors travelling with a message --------------------------------- */
#define MPE_MAX_FDS 64
typedef struct mpe_fds {
    int fd[MPE_MAX_FDS];
    int n;
} mpe_fds;

/* ---- the codec (codec.c): Lua values <-> bytes ------------------------------
 * The one wire format for tasks, results, queues, pipes and mpe.encode; see
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
/* Replace the MAC key (fuzzer and tests). */
void mpe__codec_set_key(const unsigned char key[16]);
/* mpe.register's work: relink the table at index mt by name. Raises when the
 * name is taken by another table or the table has another name. */
void mpe__codec_register_mt(lua_State *L, const char *name, int mt);

/* ---- process identity and fork discipline (proc.c) ----------------------- */

/* Fork a child the mpe way: signals blocked around fork; in the child, signal
 * handlers reset, PR_SET_PDEATHSIG set, parent-side descriptors of other
 * pools/processes closed. Returns as fork(2) does; -1 sets e. Only the main
 * thread may call it. */
pid_t mpe__proc_fork(mpe_err *e);
/* Descriptors that only the parent may hold (its ends of worker channels):
 * children forked later close them, so a dead parent is seen as EOF. */
void mpe__proc_track_fd(int fd);
void mpe__proc_untrack_fd(int fd);
/* This process's identity, as mpe.current_process() reports it. */
void mpe__proc_set_identity(const char *name, int worker);
const char *mpe__proc_name(void);
int mpe__proc_worker(void);
/* CPUs this process may use: affinity mask and cgroup quota; at least 1. */
int mpe__proc_cpu_count(void);
/* Default pool size: MPE_WORKERS if set and valid, else mpe__proc_cpu_count(). */
int mpe__proc_default_workers(void);
/* Monotonic clock, seconds. */
double mpe__proc_now(void);
/* The next number for a default child name ("Process-N"): counts the children
 * this OS process has numbered, from 1; a forked child starts again at 1. */
int mpe__proc_next_number(void);

/* ---- one-off processes (process.c) --------------------------------------------
 * A child forked to run one function and send its outcome back through a pipe.
 * The struct lives inside the binding's userdata. Only its creator (the OS
 * process that started it) waits for or signals the child; in any other
 * process (an inherited copy) its descriptors were already closed at fork. */
typedef struct mpe_process {
    pid_t pid;       /* the child, 0 before start */
    pid_t creator;   /* the process that started it */
    int fd;          /* creator: read end of the result pipe; child: write end; -1 closed */
    int pidfd;       /* creator: the child's pidfd, -1 if none (Linux < 5.3) or reaped */
    int reaped;      /* 1 once waitpid returned the child's status */
    int status;      /* that wait status */
    int discard;     /* 1: what the child sends is read and dropped */
    mpe_buf payload; /* what the child sent so far */
} mpe_process;

/* What a child's payload says (mpe__process_outcome). */
enum { MPE_PROCESS_RETURNED, MPE_PROCESS_RAISED, MPE_PROCESS_NOTHING };

void mpe__process_init(mpe_process *p);
/* Create the result pipe and fork with mpe__proc_fork. Returns the child's
 * pid in the parent, 0 in the child (p->fd is then its write end), or -1
 * with e set. */
pid_t mpe__process_start(mpe_process *p, mpe_err *e);
/* In the child: call the function below the nargs values on top of L's stack
 * under lua_pcall, send its outcome to the parent and _exit: 0 if it
 * returned, 1 if it raised. Never returns. */
_Noreturn void mpe__process_run(lua_State *L, mpe_process *p, int nargs);
/* Wait up to timeout seconds (< 0: forever) for the child to exit, reading its
 * payload meanwhile (it may exceed a pipe's capacity). Returns 1 once the child
 * is reaped, 0 on timeout, -1 with e set. Creator only. */
int mpe__process_join(mpe_process *p, double timeout, mpe_err *e);
/* Send sig unless the child was already reaped. Returns 0 or -1 with e set. */
int mpe__process_signal(mpe_process *p, int sig, mpe_err *e);
/* Python's exitcode: 0 and *code set once reaped (the exit status, or
 * -SIGNUM), -1 while the child runs or before start. */
int mpe__process_exitcode(const mpe_process *p, int *code);
/* "exited with status 3" or "killed by signal 9 (SIGKILL)", once reaped. */
void mpe__process_describe(const mpe_process *p, char *out, size_t size);
/* Push the outcome from the complete payload of a reaped child:
 * MPE_PROCESS_RETURNED with *nvalues return values pushed; MPE_PROCESS_RAISED
 * with message, traceback (or nil) and error value (or nil) pushed;
 * MPE_PROCESS_NOTHING, nothing pushed, if no complete payload arrived. */
int mpe__process_outcome(lua_State *L, const mpe_process *p, int *nvalues);
/* Release p. In its creator, a child still running is first ended: joined
 * (daemon 0), or sent SIGTERM, given 1 s, then SIGKILL and reaped (daemon 1).
 * Elsewhere only local memory is freed. Idempotent. */
void mpe__process_release(mpe_process *p, int daemon);

/* ---- Lua-side error objects (lmpe.c) ----------------------------------------
 * Task and process failures are tables with metatable "mpe.Error":
 * { kind = "error"|"crash"|"timeout", index = i, pid = n, worker = k, name = s,
 *   message = "...", traceback = "...", value = v } (absent fields are nil);
 * tostring renders e.g. "mpe: item 17 failed in worker 2 (pid 4242): job.lua:5: boom"
 * followed by the traceback. */
typedef struct mpe_failure {
    const char *kind;      /* "error", "crash" or "timeout" */
    lua_Integer index;     /* the item's input index, 0 if not an item */
    pid_t pid;             /* the process that failed, 0 if unknown */
    int worker;            /* its pool slot, 0 if not a pool worker */
    const char *name;      /* process name ("Process-3"), or NULL */
    const char *message;   /* what happened, never NULL */
    const char *traceback; /* the failing side's traceback, or NULL */
    int value;             /* stack index of the original error value, 0 if none */
} mpe_failure;

/* Push an error object built from f. */
void mpe__error_push(lua_State *L, const mpe_failure *f);
/* Push an error object as above and raise it. */
int mpe__error_raise(lua_State *L, const mpe_failure *f);
/* Raise a "timeout" error object whose message is "mpe: timeout: <what> (after N s)". */
int mpe__error_timeout(lua_State *L, const char *what, double seconds);
/* Message handler for lua_pcall. Leaves an mpe.Error untouched; anything else
 * becomes a plain table { message = <string form>, traceback = <traceback>,
 * value = <the original value if it was not a string> }. */
int mpe__error_handler(lua_State *L);

/* ---- the Lua module (lmpe*.c) ---------------------------------------------
 * luaopen_mpe builds the module table and calls each part's opener with the
 * module table on top of the stack; an opener adds its functions and
 * registers its metatables. */
void mpe__open_codec(lua_State *L);
void mpe__open_proc(lua_State *L);
void mpe__open_process(lua_State *L);
void mpe__open_pool(lua_State *L);
void mpe__open_shm(lua_State *L);
void mpe__open_sync(lua_State *L);
void mpe__open_ipc(lua_State *L);

/* Helpers for the binding layer. */
/* luaL_typename, but "mpe.range" etc. for mpe's own userdata (from __name). */
const char *mpe__typename(lua_State *L, int idx);
/* Optional timeout argument: nil/none -> -1 (wait forever), a number >= 0 ->
 * seconds; anything else raises an argument error naming fname. */
double mpe__opt_timeout(lua_State *L, int arg, const char *fname);

/* ---- the engine (engine.c) ------------------------------------------------
 * Call prepare(L) protected, with the light userdata ud as its one argument.
 * It returns nothing, or a function and its arguments: that function is then
 * called protected, with lua.c's traceback handler. A failure in prepare (a
 * syntax error, a missing file) is reported without a traceback, as lua.c
 * does. Returns 0, or -1 with the message in mpe_errmsg(e). */
int mpe__engine_run(mpe_engine *e, lua_CFunction prepare, void *ud);

#endif
