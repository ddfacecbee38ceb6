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
#include "fdio.h" /* mpe_fds */

/* Push a userdata owning an empty descriptor list: its __gc closes what is
 * still in it and frees it (move the struct out and zero it to take them). */
mpe_fds *mpe__fds_box(lua_State *L);

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

/* ---- process identity and fork discipline (proc.c) ----------------------- */

/* Fork a child the mpe way: signals blocked around fork; in the child, signal
 * handlers reset, PR_SET_PDEATHSIG set, parent-side descriptors of other
 * pools/processes closed. Returns as fork(2) does; -1 sets e. Only the main
 * thread may call it. */
pid_t mpe__proc_fork(mpe_err *e);
/* A thread other than the main one (a pool's dispatcher) calls busy before
 * it allocates or takes locks and idle before it sleeps: mpe__proc_fork waits
 * until every such thread is idle, so no child inherits a held lock. */
void mpe__proc_busy(void);
void mpe__proc_idle(void);
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
/* This process's place among the children its parent forked (1, 2, ... in
 * fork order, pool workers and mpe.process alike); 0 if mpe did not fork it. */
uint64_t mpe__proc_ordinal(void);
/* In a forked child: give math.random a stream of its own, derived from the
 * inherited stream and mpe__proc_ordinal() (rand.c). Cannot fail. */
void mpe__rand_reseed(lua_State *L);
/* "SIGKILL" for 9 and so on for the common signals; NULL for others. */
const char *mpe__proc_signal_name(int sig);

/* ---- ranks: the hooks of the MPI backend (mpi.c) -----------------------------
 * The engine never calls MPI. mpi.c is linked into the `mpe` command of an
 * MPE_MPI build only; when the command starts under an MPI launcher it sets
 * mpe__ranks, and a pool that spans ranks uses its transport (transport.h).
 * NULL: one rank (mpe.so, libmpe, the command outside mpirun). */
struct mpe_transport_ops;
typedef struct mpe_ranks {
    int rank, size;
    pid_t pid;          /* the process that joined MPI: its forked children are not ranks */
    const int *workers; /* each rank's default pool size */
    /* The backend of pools that span ranks: links on this rank are the
     * socketpair backend's, others are workers forked by their own rank. */
    const struct mpe_transport_ops *transport;
    /* The rank of the remote worker with that pid (as start reported it):
     * 1, or 0 if no remote worker had it. Any thread. */
    int (*where)(pid_t pid, int *rank);
} mpe_ranks;
extern const mpe_ranks *mpe__ranks;
/* mpi.c, called by cli.c in an MPE_MPI build. launched: whether an MPI
 * launcher started this process (its environment variables). start: MPI_Init,
 * rank 0's MAC key to every rank, each rank's default pool size to all, the
 * bridge thread on rank 0; returns this rank, or -1 with e set. serve: the
 * loop of ranks other than 0, until rank 0 says quit or a signal comes;
 * returns the exit status. finish: tell the other ranks to quit (rank 0),
 * MPI_Finalize. */
int mpe__mpi_launched(void);
int mpe__mpi_start(int *argc, char ***argv, mpe_err *e);
int mpe__mpi_serve(lua_State *L);
void mpe__mpi_finish(void);
/* This process's rank (0 without MPI), inherited by forked children. */
int mpe__proc_rank(void);
void mpe__proc_set_rank(int rank);

/* ---- the pool: transport, worker loop, scheduler (transport.c, worker.c, pool.c) ----
 * Frames between the pool and its workers: [u32 payload length][u8 type][payload].
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

/* What a worker is doing, in memory shared with the parent: the item it runs
 * (for blame when it dies, and for task timeouts). */
typedef struct mpe_progress {
    volatile int64_t chunk;      /* chunk id being run, 0 when idle */
    volatile int32_t item;       /* its item being run (0-based) */
    volatile int64_t started_ns; /* when that item started (monotonic) */
    volatile int32_t ready;      /* the initializer is done: deaths now are the items' */
} mpe_progress;

struct mpe_link;
struct mpe_transport_ops;
typedef struct mpe_worker_cfg {
    const struct mpe_transport_ops *tp; /* how it talks to the pool */
    struct mpe_link *link; /* its end of its channel */
    int slot;              /* 1..n */
    int number;            /* K in PoolWorker-K */
    int maxtasks;          /* exit after this many items (0: never) */
    int timeouts;          /* the pool has a task timeout: stamp each item's start */
    double timeout;        /* that timeout, seconds (a remote rank enforces it) */
    int init_ref;          /* registry ref of the initializer, or LUA_NOREF */
    int initargs_ref;      /* registry ref of its argument table, or LUA_NOREF */
    mpe_progress *progress;
    int remote;            /* its results go to another rank: no descriptors, C functions by name */
    lua_CFunction handler; /* message handler for tasks (the binding layer's traceback) */
} mpe_worker_cfg;

/* The worker's loop, in a forked child: runs the initializer, then chunks,
 * until STOP, EOF or its task budget. Never returns. */
void mpe__worker_main(lua_State *L, const mpe_worker_cfg *cfg) __attribute__((noreturn));
/* Decode the value at r (a function or an {initializer, initargs} table from
 * another rank) and push it; if it cannot be decoded here, push instead a
 * function that raises the decode error. */
void mpe__worker_decode_fn(lua_State *L, mpe_rd *r);

/* Frames of the pool protocol (transport.c). */
/* Read a frame header at b[off]: returns 1 and sets *type, *len when a whole
 * frame is buffered, 0 when more bytes are needed. */
int mpe__frame_peek(const mpe_buf *b, size_t off, unsigned *type, uint32_t *len);
/* Start a frame of the given type in b; mpe__frame_end patches its length. */
size_t mpe__frame_begin(lua_State *L, mpe_buf *b, unsigned type);
void mpe__frame_end(mpe_buf *b, size_t start);

/* ---- one-off processes (process.c) --------------------------------------------
 * A child forked to run one function and send its outcome back through a
 * socketpair (shared objects in it travel as descriptors).
 * The struct lives inside the binding's userdata. Only its creator (the OS
 * process that started it) waits for or signals the child; in any other
 * process (an inherited copy) its descriptors were already closed at fork. */
typedef struct mpe_process {
    pid_t pid;       /* the child, 0 before start */
    pid_t creator;   /* the process that started it */
    int fd;          /* creator: its end of the result channel; child: its end; -1 closed */
    int pidfd;       /* creator: the child's pidfd, -1 if none (Linux < 5.3) or reaped */
    int reaped;      /* 1 once waitpid returned the child's status */
    int status;      /* that wait status */
    int discard;     /* 1: what the child sends is read and dropped */
    mpe_buf payload; /* what the child sent so far */
    mpe_fds fds;     /* descriptors of shared objects that came with it (owned) */
    lua_CFunction handler; /* the child's message handler (the binding layer's traceback) */
} mpe_process;

/* What a child's payload says (mpe__process_outcome). */
enum { MPE_PROCESS_RETURNED, MPE_PROCESS_RAISED, MPE_PROCESS_NOTHING };

void mpe__process_init(mpe_process *p);
/* Create the result channel and fork with mpe__proc_fork. Returns the child's
 * pid in the parent, 0 in the child (p->fd is then its write end), or -1
 * with e set. */
pid_t mpe__process_start(mpe_process *p, mpe_err *e);
/* In the child: call the function below the nargs values on top of L's stack
 * under lua_pcall, send its outcome to the parent and _exit: 0 if it
 * returned, 1 if it raised. Never returns. */
_Noreturn void mpe__process_run(lua_State *L, mpe_process *p, int nargs);
/* Wait up to timeout seconds (< 0: forever) for the child to exit, reading its
 * payload meanwhile (it may exceed a socket buffer). Returns MPE_WAIT_OK (1)
 * once the child is reaped, MPE_WAIT_TIMEOUT (0), MPE_WAIT_INTERRUPTED when w
 * (may be NULL) says stop, which it is asked at least every 100 ms, or
 * MPE_WAIT_ERROR (-1) with e set. Creator only. */
struct mpe_waitctl;
int mpe__process_join(mpe_process *p, double timeout, const struct mpe_waitctl *w, mpe_err *e);
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
int mpe__process_outcome(lua_State *L, mpe_process *p, int *nvalues);
/* Release p. In its creator, a child still running is first ended: joined
 * (daemon 0), or sent SIGTERM, given 1 s, then SIGKILL and reaped (daemon 1,
 * or once a signal has come: mpe__sig_seen, also during the join).
 * Elsewhere only local memory is freed. Idempotent. */
void mpe__process_release(mpe_process *p, int daemon);

/* The scheduler (pool.c). The main thread creates jobs and reads messages;
 * a dispatcher thread moves chunks and results; only the main thread touches
 * Lua. */
typedef struct mpe_pool mpe_pool;
typedef struct mpe_job mpe_job;

typedef struct mpe_pool_opts {
    int workers;
    int maxtasks;      /* items per worker before it is replaced; 0: unlimited */
    double timeout;    /* seconds one item may run; <= 0: no limit */
    int retries;       /* re-runs of an item whose worker died */
    int init_ref, initargs_ref; /* registry refs, or LUA_NOREF */
    const struct mpe_transport_ops *transport; /* NULL: the socketpair backend (transport.h) */
    int spread;        /* spans MPI ranks (transport is mpi.c's): the cross-rank codec route */
    lua_CFunction handler; /* message handler for task errors, given by the binding layer */
} mpe_pool_opts;

/* A message for the main thread: results of some items, or a failure. */
enum { MPE_MSG_RESULT = 1, MPE_MSG_FAIL, MPE_MSG_INITFAIL, MPE_MSG_BROKEN /* text: why */ };
typedef struct mpe_msg {
    struct mpe_msg *next;
    int type;
    mpe_job *job;          /* NULL for INITFAIL */
    lua_Integer index;     /* input index (1-based) of the first item concerned */
    uint32_t count;        /* RESULT: items in data; FAIL: items concerned (0 means 1) */
    unsigned flags;        /* RESULT: MPE_R_* */
    int worker;            /* the worker's number K (PoolWorker-K) */
    pid_t pid;
    const char *kind;      /* FAIL: "crash", "timeout" or "error" (the parent ran out of memory) */
    char text[192];        /* FAIL: what happened */
    mpe_fds fds;           /* descriptors that came with the results */
    size_t len;
    char data[];           /* RESULT: the payload; INITFAIL: the encoded error */
} mpe_msg;

/* Create a pool: fork its workers from L's state and start the dispatcher.
 * Returns NULL and sets e on failure (nothing is left running). */
mpe_pool *mpe__pool_new(lua_State *L, const mpe_pool_opts *o, mpe_err *e);
/* Fork replacements for workers that died or retired. Returns 0 or -1 (e set). */
int mpe__pool_respawn(lua_State *L, mpe_pool *p, mpe_err *e);
/* Send the function at idx to every worker (once while it is cached) and
 * return its id. Raises if it cannot be encoded. */
uint64_t mpe__pool_function(lua_State *L, mpe_pool *p, int idx);
/* A new job running function fnid in the given mode over items added next. */
mpe_job *mpe__pool_job(mpe_pool *p, int mode, uint64_t fnid, int chunksize, int raise_first);
/* Items: a range (count values start, start+step, ...), packed numbers, or
 * encoded values (each add_enc call appends one item's encoding from b).
 * Raise on memory exhaustion. */
void mpe__pool_add_range(lua_State *L, mpe_job *j, lua_Integer start, lua_Integer step, lua_Integer count);
/* Packed numbers are written in place: begin reserves room for count items
 * and returns where they go; commit makes the first count written items
 * visible (call it as often as useful: workers start on them at once). */
char *mpe__pool_packed_begin(lua_State *L, mpe_pool *p, mpe_job *j, int kind, size_t count);
void mpe__pool_packed_commit(mpe_pool *p, mpe_job *j, size_t count, int finished);
/* fds: the descriptors the item's encoding refers to (slots 0..n-1; may be
 * NULL). The pool takes them all (each set to -1): a segment it already
 * knows is closed here, a new one kept, so each distinct segment is held and
 * sent to each worker once however many items carry it. */
void mpe__pool_add_enc(lua_State *L, mpe_pool *p, mpe_job *j, const char *s, size_t n, mpe_fds *fds);
/* A finished, published job of the one encoded item s[0..n) (apply,
 * apply_async): created, stored and handed to the dispatcher under one
 * acquisition of the pool's lock, its offsets inside the job. fds as for
 * mpe__pool_add_enc. Raises on memory exhaustion (then no job exists). */
mpe_job *mpe__pool_job_one(lua_State *L, mpe_pool *p, int mode, uint64_t fnid, int raise_first,
                           const char *s, size_t n, mpe_fds *fds);
/* Make the items added so far visible to the dispatcher; finished: no more will come. */
void mpe__pool_publish(mpe_pool *p, mpe_job *j, int finished);
/* Let the dispatcher use only items before limit (0-based store index; the
 * default is no limit): imap over a range or a table shows the workers a
 * window ahead of its consumer, so results never pile up unread. */
void mpe__pool_job_window(mpe_pool *p, mpe_job *j, lua_Integer limit);
/* Take the next message (NULL if none); hand it back with mpe__pool_msg_done. */
mpe_msg *mpe__pool_take(mpe_pool *p);
/* Whether the message's job is still wanted (not released). Main thread. */
int mpe__pool_msg_live(const mpe_msg *m);
/* Free a message, its leftover descriptors, and its job if that was the last use. */
void mpe__pool_msg_done(mpe_pool *p, mpe_msg *m);
/* Wait until a message arrives, a worker needs replacing, or the deadline
 * (monotonic seconds; <0 none) passes. Returns 1 if there may be news, 0 on timeout. */
int mpe__pool_wait(mpe_pool *p, double deadline);
/* Stop running j (errors = "raise" failed, or abandoned). */
void mpe__pool_job_cancel(mpe_pool *p, mpe_job *j);
/* Withdraw j if no worker was ever handed any of its items (pool_cancel.c):
 * returns 1 and cancels it, or 0 and changes nothing. */
int mpe__pool_job_withdraw(mpe_pool *p, mpe_job *j);
/* The caller no longer needs j; freed once no chunk or message refers to it. */
void mpe__pool_job_release(mpe_pool *p, mpe_job *j);
/* Stop the workers: gracefully (STOP after pending work) or now (SIGKILL),
 * reap them and the dispatcher. Idempotent. */
void mpe__pool_stop(mpe_pool *p, int now);
/* Free everything (stops first if needed). In a forked copy (not the
 * creator's pid) it only frees memory. */
void mpe__pool_free(mpe_pool *p);
/* Workers started so far (PoolWorker-K numbering). */
int mpe__pool_started(mpe_pool *p);

/* ---- shared memory, arrays, synchronization (shm.c, array.c, sync.c) ---------
 * Shared objects live in memfd segments mapped MAP_SHARED (never in /dev/shm):
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

/* Element types (array.c holds the one table). */
enum { MPE_CT_SIGNED, MPE_CT_UNSIGNED, MPE_CT_FLOAT };
typedef struct mpe_ctype {
    const char *name;  /* "int32" */
    const char *codes; /* Python typecodes that alias it, e.g. "lq" */
    unsigned size;     /* bytes */
    int cls;           /* MPE_CT_* */
} mpe_ctype;

/* A Lua number without Lua: an integer (isint) or a float. */
typedef struct mpe_num {
    int isint;
    int64_t i;
    double d;
} mpe_num;

/* The ctype named by a name or a one-letter typecode, NULL if none. */
const mpe_ctype *mpe__array_ctype(const char *name);
/* A new zero-filled array: ndim 1 (rows elements), 2 (rows x cols) or 0 (a
 * value: one element). NULL and e set on failure (size overflow, memfd...). */
mpe_shm_obj *mpe__array_new(const mpe_ctype *t, int ndim, size_t rows, size_t cols, mpe_err *e);
/* Check a decoded array object and fill its cached facts. 0, or -1 with e. */
int mpe__array_attach(mpe_shm_obj *o, mpe_err *e);
const mpe_ctype *mpe__array_type(const mpe_shm_obj *o);
/* ndim (0, 1 or 2) and the shape. */
int mpe__array_shape(const mpe_shm_obj *o, size_t *rows, size_t *cols);
/* Element i (0-based, flat; the caller checks i < o->n). */
mpe_num mpe__array_get(const mpe_shm_obj *o, size_t i);
/* Convert v to an element of o's type in *bits: -1 with e set ("value 1.5 is
 * not an integer (array of int32)") if it does not fit. */
int mpe__array_check(const mpe_shm_obj *o, mpe_num v, uint64_t *bits, mpe_err *e);
void mpe__array_put(mpe_shm_obj *o, size_t i, uint64_t bits);
/* Atomically add delta to element i; *out is the new value. -1 with e set
 * (the element unchanged) when delta or the result does not fit the type. */
int mpe__array_add(mpe_shm_obj *o, size_t i, mpe_num delta, mpe_num *out, mpe_err *e);
/* Elements [from, to) set to bits / summed (integers exactly while the sum
 * fits an int64, else as a float). */
void mpe__array_fill(mpe_shm_obj *o, size_t from, size_t to, uint64_t bits);
mpe_num mpe__array_sum(const mpe_shm_obj *o, size_t from, size_t to);

/* Synchronization objects (sync.c). Waits take a timeout in seconds (< 0:
 * none), sleep in slices of at most 100 ms, and between slices ask w (may be
 * NULL) whether to give up (an interrupt). Results: */
enum {
    MPE_WAIT_ERROR = -1,      /* e set */
    MPE_WAIT_TIMEOUT = 0,
    MPE_WAIT_OK = 1,
    MPE_WAIT_OWNERDEAD = 2,   /* a lock's holder died: recovered and released, *dead = its pid */
    MPE_WAIT_INTERRUPTED = 3  /* w said stop */
};
typedef struct mpe_waitctl {
    int (*interrupted)(void *ud);
    void *ud;
} mpe_waitctl;

/* A new lock, rlock, semaphore (n = initial value), event, condition or
 * barrier (n = parties). NULL and e set on failure. */
mpe_shm_obj *mpe__sync_new(uint32_t kind, unsigned n, mpe_err *e);
/* Check the kind-specific part of a decoded object. 0, or -1 with e set. */
int mpe__sync_attach(mpe_shm_obj *o, mpe_err *e);
/* Drop a reference. When it is this process's last one to a lock it holds,
 * the lock is released first: a mutex on the robust list must stay mapped. */
void mpe__sync_drop(mpe_shm_obj *o);
/* A robust, process-shared mutex (recursive if asked), for the sync objects
 * and the queue's and dict's own locks. 0, or -1 with e set. */
int mpe__sync_mutex_init(pthread_mutex_t *m, int recursive, mpe_err *e);
/* lock / rlock */
int mpe__sync_lock_acquire(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, pid_t *dead,
                           mpe_err *e);
/* 0, or -1 with e set ("lock is not held by this process"). */
int mpe__sync_lock_release(mpe_shm_obj *o, mpe_err *e);
int mpe__sync_lock_held(const mpe_shm_obj *o);
/* semaphore */
int mpe__sync_sem_acquire(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, mpe_err *e);
int mpe__sync_sem_release(mpe_shm_obj *o, unsigned n, mpe_err *e);
int mpe__sync_sem_value(const mpe_shm_obj *o);
/* event */
void mpe__sync_event_set(mpe_shm_obj *o);
void mpe__sync_event_clear(mpe_shm_obj *o);
int mpe__sync_event_is_set(const mpe_shm_obj *o);
int mpe__sync_event_wait(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, mpe_err *e);
/* condition over lock (a lock or rlock object this process holds) */
int mpe__sync_cond_wait(mpe_shm_obj *c, mpe_shm_obj *lock, double timeout, const mpe_waitctl *w,
                        pid_t *dead, mpe_err *e);
/* Wake up to n waiters (n < 0: all). -1 with e set if lock is not held. */
int mpe__sync_cond_notify(mpe_shm_obj *c, mpe_shm_obj *lock, int n, mpe_err *e);
/* barrier: *index is the arrival index 1..parties. A wait that times out or
 * is interrupted withdraws its arrival. */
int mpe__sync_barrier_wait(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, unsigned *index,
                           mpe_err *e);
unsigned mpe__sync_barrier_parties(const mpe_shm_obj *o);

/* ---- queues, pipes and dicts (ipc.c, queue.c, pipe.c, dict.c) ----------------
 * mpe.queue and mpe.dict keep their lock and counters in a small shm.c object
 * (a robust process-shared mutex) and their data in a growable memfd of their
 * own; mpe.pipe is a socketpair. Descriptors of shared objects inside queue items
 * travel over a datagram socketpair created with each queue; see
 * docs/ARCHITECTURE.md. Waits return MPE_WAIT_* (sync.c) or: */
#include <pthread.h>
enum { MPE_SHM_QUEUE = 32, MPE_SHM_DICT = 33 }; /* object kinds, next to MPE_SHM_* */
#define MPE_IPC_CLOSED 16 /* the queue is closed / the pipe's other end is gone */

/* ipc.c: helpers shared by the three. Deadlines are mpe__proc_now() seconds, < 0: none. */
/* MPE_WAIT_OK, MPE_WAIT_OWNERDEAD (held now, its holder died: repair the
 * state, then call mpe__ipc_consistent), MPE_WAIT_TIMEOUT,
 * MPE_WAIT_INTERRUPTED or MPE_WAIT_ERROR (e set). Sleeps in slices of at most
 * 100 ms and asks w between them. */
int mpe__ipc_lock(pthread_mutex_t *m, double deadline, const mpe_waitctl *w, mpe_err *e);
void mpe__ipc_consistent(pthread_mutex_t *m);
void mpe__ipc_unlock(pthread_mutex_t *m);
/* Sleep while *addr == val: MPE_WAIT_OK (woken, or the word differs),
 * MPE_WAIT_TIMEOUT or MPE_WAIT_INTERRUPTED. Shared (not private) futexes. */
int mpe__ipc_futex_wait(uint32_t *addr, uint32_t val, double deadline, const mpe_waitctl *w);
void mpe__ipc_futex_wake(uint32_t *addr, int n);
/* A descriptor inside a reference: fd_write appends a duplicate of fd to fds
 * and writes [u32 slot][u64 device][u64 inode] to b; fd_read returns a
 * duplicate (close-on-exec) of the descriptor in that slot after checking
 * that it is that very file (the identity guards against a message whose
 * slots were mixed up) and of type mode (S_IFREG, S_IFSOCK). -1 and e set on
 * failure. */
int mpe__ipc_fd_write(int fd, mpe_buf *b, mpe_fds *fds, mpe_err *e);
int mpe__ipc_fd_read(mpe_rd *r, const mpe_fds *fds, unsigned mode, mpe_err *e);
/* Test hook: a process that reaches crash point `point` of the protocols
 * kills itself with SIGKILL (0: none). Only tests set it. */
enum {
    MPE_CRASH_PUT_COPIED = 1, /* queue put: record written, not committed */
    MPE_CRASH_PUT_SENT,       /* queue put: descriptors sent, not committed */
    MPE_CRASH_GET_PEEKED,     /* queue get: descriptors peeked, not committed */
    MPE_CRASH_GET_TAKEN,      /* queue get: committed, descriptor message not removed */
    MPE_CRASH_DICT_WRITTEN,   /* dict set: record appended, not linked */
    MPE_CRASH_DICT_REBUILT,   /* dict: new table written, not switched to */
    MPE_CRASH_QUEUE_MOVED     /* queue: records copied to a new ring, not switched to */
};
void mpe__ipc_set_crash(int point);
void mpe__ipc_crash(int point);

/* queue.c. A queue is an mpe_shm_obj of kind MPE_SHM_QUEUE; its o->data is
 * this process's state (the ring's mapping, the descriptor channel). Items are opaque bytes plus
 * descriptors; the binding encodes and decodes them with the codec. */
/* maxsize items (0: unbounded), a first ring of `bytes` (0: the default, 1
 * MiB); the ring grows when full and shrinks back when drained. */
mpe_shm_obj *mpe__queue_new(size_t maxsize, size_t bytes, mpe_err *e);
/* A reference that travels (segment and channel descriptors go into fds),
 * read back with one more reference; like mpe__shm_ref_write/read. */
int mpe__queue_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e);
mpe_shm_obj *mpe__queue_ref_read(mpe_rd *r, mpe_fds *fds, mpe_err *e);
/* Drop a reference (the last one in this process closes the channel). */
void mpe__queue_drop(mpe_shm_obj *o);
/* Append an item: n bytes and the descriptors in fds (which put closes in
 * every case, leaving fds->n = 0). timeout in seconds, < 0: forever.
 * MPE_WAIT_OK, _TIMEOUT, _INTERRUPTED, MPE_IPC_CLOSED or _ERROR (e set). */
int mpe__queue_put(mpe_shm_obj *o, const void *p, size_t n, mpe_fds *fds, double timeout,
                   const mpe_waitctl *w, mpe_err *e);
/* Take the oldest item: its bytes replace out's contents, its descriptors
 * are appended to fds (the caller closes them). Returns as put; CLOSED only
 * once the queue is closed and empty. */
int mpe__queue_get(mpe_shm_obj *o, mpe_buf *out, mpe_fds *fds, double timeout,
                   const mpe_waitctl *w, mpe_err *e);
/* Mark the queue closed for every process and wake all waiters. */
void mpe__queue_close(mpe_shm_obj *o);
size_t mpe__queue_size(const mpe_shm_obj *o);
size_t mpe__queue_maxsize(const mpe_shm_obj *o);
int mpe__queue_closed(const mpe_shm_obj *o);
/* The ring's current size in bytes (it grows when full, shrinks when drained). */
size_t mpe__queue_capacity(const mpe_shm_obj *o);

/* pipe.c. One end of an mpe.pipe: a stream socket carrying frames
 * [u32 length][u32 descriptor count][payload], the descriptors attached to the
 * frame's first byte. The struct lives in the binding's userdata. */
typedef struct mpe_pipe {
    int fd;        /* -1 once closed */
    mpe_buf in;    /* received bytes; in.p[off..] is not consumed yet */
    size_t off;
    mpe_fdin q;    /* received descriptors not yet handed out, in order */
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

/* ---- signals (sig.c) ----------------------------------------------------------
 * SIGINT and SIGTERM stop a script run by the mpe command (or a host that asks
 * with mpe_handle_signals): waits inside mpe check for them. */
int mpe__sig_install(lua_State *L, mpe_err *e);
/* The signal caught (SIGINT, SIGTERM), or 0. */
int mpe__sig_caught(void);
/* In a stock interpreter: put a recorder in front of the host's own SIGINT
 * handler (lua.c's), which it still calls, so that mpe knows the script was
 * interrupted even when the signal came while Lua code ran. Does nothing if
 * SIGINT has no handler (its default ends the process) or is mpe's own. */
void mpe__sig_record(void);
/* A signal came: mpe__sig_caught(), or SIGINT seen by the recorder; 0 if none. */
int mpe__sig_seen(void);
/* "mpe: interrupted by SIGINT" / "mpe: terminated by SIGTERM". */
const char *mpe__sig_message(int sig);
/* Raise the error for the caught signal. */
int mpe__sig_raise(lua_State *L);
/* A wait records the hook it started with; mpe__sig_check raises if a signal
 * came (ours, or lua.c's hook) since. */
typedef struct mpe_sigwatch {
    lua_State *L, *main; /* the waiting thread, and the main one (lua.c hooks that) */
    lua_Hook hook, main_hook;
    int mask, main_mask;
} mpe_sigwatch;
void mpe__sig_watch(lua_State *L, mpe_sigwatch *w);
void mpe__sig_check(lua_State *L, const mpe_sigwatch *w);
/* Whether a signal came since mpe__sig_watch; as a callback for the
 * engine's waits (mpe_waitctl.interrupted), ud being the mpe_sigwatch. */
int mpe__sig_changed(void *ud);

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
/* lmpe_err.c: push mpe.Error, the error objects' metatable (made once). */
void mpe__open_errors(lua_State *L);
void mpe__error_push(lua_State *L, const mpe_failure *f);
/* Push an error object as above and raise it. */
int mpe__error_raise(lua_State *L, const mpe_failure *f);
/* Raise a "timeout" error object whose message is "mpe: timeout: <what> (after N s)". */
int mpe__error_timeout(lua_State *L, const char *what, double seconds);
/* Message handler for lua_pcall. Leaves an mpe.Error untouched; anything else
 * becomes a plain table { message = <string form>, traceback = <traceback>,
 * value = <the original value if it was not a string> }. */
int mpe__error_handler(lua_State *L);

/* ---- the Lua heap on huge pages (alloc.c) ----------------------------------
 * Wrap L's allocator (delegating every call to it) with one that advises the
 * kernel to back the heap with transparent huge pages, so that fork copies
 * fewer page-table entries. Called by mpe_new and luaopen_mpe; does nothing
 * when THP is off, when MPE_HUGEPAGES=0, when L is wrapped already, or when
 * another allocator of this process is wrapped. Cannot fail. */
void mpe__alloc_hugepages(lua_State *L);

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

/* mpe.range (lmpe_range.c): the userdata at idx if it is one, else NULL. */
typedef struct mpe_range {
    lua_Integer first, step, count;
} mpe_range;
const mpe_range *mpe__range_test(lua_State *L, int idx);
/* lmpe_shm.c: the object of the open mpe.Array at idx, or NULL if it is none. */
mpe_shm_obj *mpe__array_test(lua_State *L, int idx);
/* worker.c: option out='s write of one item's values (slots first..last) into
 * element or row item - 1 of arr; raises "mpe: out: ..." when they do not fit. */
void mpe__out_put(lua_State *L, mpe_shm_obj *arr, long long item, int first, int last);
void mpe__open_range(lua_State *L); /* called by mpe__open_pool */

/* Helpers for the binding layer. */
/* Raise a message formatted by vsnprintf (Lua's own formatter lacks %zu and,
 * in LuaJIT, 64-bit integers). Never returns. */
int mpe__fail(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The value at idx for "got X" in messages: numbers as themselves, strings
 * quoted, anything else its type name. The string lives on the stack. */
const char *mpe__got(lua_State *L, int idx);
/* The number a message gives the argument at stack index idx of the function
 * named fname: for a method ("pool:map") self is not counted, as Lua counts
 * for a call with ':' (argument 1 is the first after self); self itself is
 * named "self" in messages. */
int mpe__argno(const char *fname, int idx);
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
