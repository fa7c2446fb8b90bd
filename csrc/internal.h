/*
** internal.h: declarations shared by the C files of lasync.core (prefix lasync__).
** Nothing here is part of the public API; see lasync.h for that.
*/
#ifndef LASYNC_INTERNAL_H
#define LASYNC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lua.h"
#include "lauxlib.h"
#include "lasync.h"
#include "compat.h"

#define LASYNC_RUNTIME_MT "lasync.runtime"
#define LASYNC_TASK_MT "lasync.task"
#define LASYNC_FUTURE_MT "lasync.future"
#define LASYNC_SCOPE_MT "lasync.scope"
#define LASYNC_WAITSET_MT "lasync.waitset"
#define LASYNC_ERROR_MT "lasync.error"
#define LASYNC_OP_MT "lasync.op"
#define LASYNC_NOTIFIER_MT "lasync.notifier"

/* Registry key of the runtime userdata. */
#define LASYNC_RUNTIME_KEY "lasync.runtime"
/* Registry key under which lasync_set_loop leaves the host's loop for luaopen. */
#define LASYNC_HOSTLOOP_KEY "lasync.hostloop"

#define lasync__container_of(p, type, field) ((type *)((char *)(p) - offsetof(type, field)))

typedef struct lasync__runtime lasync__runtime;
typedef struct lasync__task lasync__task;
typedef struct lasync__subsystem lasync__subsystem;
typedef struct lasync__req lasync__req;

/* The classes of lasync.core: their metatables are kept by address for fast type checks. */
enum {
  LASYNC_CLS_TASK, LASYNC_CLS_FUTURE, LASYNC_CLS_SCOPE, LASYNC_CLS_WAITSET,
  LASYNC_CLS_NOTIFIER, LASYNC_CLS_OP, LASYNC_CLS_HTTP_MULTI, LASYNC_CLS_HTTP_REQUEST,
  LASYNC_CLS_FILE, LASYNC_CLS_SIGNAL,
  LASYNC_CLS_STREAM, LASYNC_CLS_LISTENER, LASYNC_CLS_PROCESS,
  LASYNC_NCLASSES
};

/* {====== timers: one binary heap per runtime, driven by one uv_timer ======} */

/* Heap entries are embedded in tasks: a due entry wakes or interrupts its task. */
typedef struct lasync__timer {
  double when;                 /* absolute, in lasync__now() seconds */
  uint64_t seq;                /* insertion order: equal deadlines fire FIFO */
  uint32_t idx;                /* 1-based position in the heap; 0 = not armed */
} lasync__timer;

/* Monotonic time in seconds. */
double lasync__now(void);
/* Arms (or re-arms) tm to fire at `when`. Never runs Lua. */
void lasync__timer_start(lasync__runtime *rt, lasync__timer *tm, double when);
void lasync__timer_stop(lasync__runtime *rt, lasync__timer *tm);
/* Fires every timer due at `now` (lasync__task_timer); that only marks tasks ready. */
void lasync__timers_run(lasync__runtime *rt, double now);
/* Seconds until the earliest timer (negative if due), or HUGE_VAL if none. */
double lasync__timers_next(lasync__runtime *rt, double now);

/* {====== futures and tasks ======} */

enum { LASYNC_PENDING = 0, LASYNC_OK, LASYNC_ERROR, LASYNC_CANCELLED };
enum { LASYNC_KIND_FUTURE = 1, LASYNC_KIND_TASK };

/* Intrusive circular list node; a node is linked iff next != NULL. */
typedef struct lasync__dlist {
  struct lasync__dlist *next, *prev;
} lasync__dlist;

typedef struct lasync__listener lasync__listener;
/* Something waiting for a future to finish; firing runs no Lua. Listeners fire in the order
** they were linked: index < 0 is the await of the task that embeds it, index >= 0 is node
** `index` of a waitset. */
struct lasync__listener {
  lasync__dlist link;          /* must be first */
  int index;
};

typedef struct lasync__fut {
  unsigned char kind;          /* LASYNC_KIND_* */
  unsigned char state;         /* LASYNC_PENDING ... */
  unsigned char retrieved;     /* its outcome was observed (await, result, error, gather) */
  unsigned char has_callbacks; /* on_done callbacks are waiting in the extra table */
  int nres;                    /* number of results when state == LASYNC_OK */
  lasync__dlist listeners;     /* sentinel */
} lasync__fut;

/* User values of future and task userdata. A task reuses its slots as it goes: slot 1 holds
** the function to run, then its coroutine while it runs, then its outcome; slot 2 holds the
** function that spawned it (for file:line), until an extra table is needed, which keeps it as
** extra.site. */
#define LASYNC_UV_RESULT 1     /* done: single result, or {n=...} table, or the error value */
#define LASYNC_UV_FN 1         /* task, not started: the function to run */
#define LASYNC_UV_CO 1         /* task, running: its coroutine */
#define LASYNC_UV_EXTRA 2      /* a table: callbacks, name, traceback, site, ... */
#define LASYNC_UV_SITE 2       /* task, while it has no extra table: its spawn site */
#define LASYNC_UV_ARGS 3       /* task, not started: first argument (more follow) */

/* What a suspended task is waiting for. */
enum {
  LASYNC_OP_NONE = 0,          /* running, ready, new or done */
  LASYNC_OP_YIELD,             /* sleep(0): already in the ready queue */
  LASYNC_OP_SLEEP,
  LASYNC_OP_AWAIT,             /* one future: task->wait is linked */
  LASYNC_OP_WAITSET,           /* task->op is a waitset */
  LASYNC_OP_EXTERN,            /* task->op is a lasync_op */
  LASYNC_OP_PARK               /* core.park: task->w.token says which wait */
};

typedef struct lasync__scope lasync__scope;

struct lasync__task {
  lasync__fut fut;             /* must be first: a task is a future */
  lasync__timer timer;         /* sleep and deadline wake-ups */
  lasync__task *next;          /* ready queue link */
  lua_State *co;               /* coroutine while running, else NULL */
  union {
    lasync__listener wait;     /* LASYNC_OP_AWAIT */
    void *op;                  /* LASYNC_OP_WAITSET / LASYNC_OP_EXTERN record */
    lua_Integer token;         /* LASYNC_OP_PARK */
  } w;
  lasync__scope **scopes;      /* cancel scopes, innermost last */
  uint32_t id;
  int slot;                    /* index in the runtime's live table */
  int site_line;               /* line of the spawn call, or -1 */
  unsigned short nscopes, capscopes;
  unsigned char op_kind;
  unsigned char queued;
  unsigned char cancel_requested;
  unsigned char reported;      /* an unretrieved failure was reported */
  unsigned char nargs;
  unsigned char served;        /* core.unpark gave this parked task a value */
};

struct lasync__scope {
  lasync__task *task;          /* owner while entered, else NULL */
  double deadline;             /* absolute, HUGE_VAL for none */
  double duration;             /* the relative timeout, for messages */
  int ref;                     /* registry ref that anchors the scope while entered */
  unsigned char cancelled;     /* cancelled explicitly or expired; sticky until exit */
  unsigned char expired;
  unsigned char shield;
};

/* Thread-pool work (fs, dns) whose task was cancelled while a thread runs it: nobody waits for
** it, and it may never end (opening a FIFO nobody writes to). It keeps the loop alive but
** counts neither for deadlock detection nor, beyond a short grace, for closing the runtime. */
typedef struct lasync__abandoned lasync__abandoned;
struct lasync__abandoned {
  lasync__runtime *rt;         /* NULL when not linked (or the runtime is gone) */
  lasync__abandoned *prev, *next;
  unsigned char running;       /* abandoned, and its callback did not run yet */
};

struct lasync__runtime {
  uv_loop_t *loop;
  uv_loop_t *own_loop;         /* malloc'd: left allocated if abandoned work outlives us */
  uv_timer_t *wake;            /* malloc'd, freed in its close callback */
  uv_idle_t *idle;             /* active while tasks are ready: libuv must not block then */
  lua_State *L;                /* main thread: for finalizer-time work only */
  lasync__task *current;       /* the task being resumed, or NULL */
  lasync__task *ready_head, *ready_tail;
  lasync__timer **heap;
  uint32_t nheap, capheap;
  uint64_t timer_seq;
  uint32_t task_ids;
  int ntasks;                  /* live (not finished) tasks */
  unsigned char shutting_down; /* run's main task finished: new tasks start cancelled */
  int live_ref;                /* registry: slot -> task userdata */
  int *free_slots;
  int nfree, capfree, nslots;
  int pool_ref;                /* registry: idle coroutines (array) */
  int npool;
  int failed_ref;              /* registry: weak-keyed set of failed, unretrieved tasks */
  int passthrough_ref;         /* registry: weak-keyed set of pass-through coroutines */
  int notifiers_ref;           /* registry: notifiers with pending notifications */
  int parked_ref;              /* registry: slot -> value given by core.unpark */
  lua_Integer park_tokens;     /* the last token core.park_in gave out (they count up) */
  const void *mt[LASYNC_NCLASSES];  /* class metatables, by address: type checks without */
  int mtref[LASYNC_NCLASSES];       /* string look-ups; and their registry refs */
  int nexternal;               /* external ops in flight */
  lasync__abandoned *abandoned; /* abandoned thread-pool work still running */
  unsigned nabandoned;
  double last_poll;
  struct lasync_notifier *notify_head; /* notifiers that fired, not yet dispatched */
  unsigned char running;       /* inside async.run or lasync_step */
  unsigned char in_uv;         /* inside uv_run, or the host's loop runs (hosted) */
  unsigned char idle_on;
  unsigned char owns_loop;
  unsigned char hosted;        /* the host drives the loop (lasync_set_loop) */
  struct lasync__proch *procs; /* process.c: open process handles, closed at teardown */
  lasync__req *reqs;           /* req.c: requests a task waits for (op != NULL) */
  int ctx_ref;                 /* context.c: registry: slot -> context (0: outside tasks) */
  unsigned char ctx_used;      /* a context was set: ctx_ref exists */
};

/* {====== the subsystems of lasync.core (subsys.c) ======} */

/* One entry per subsystem, in the spirit of Lua's linit.c: luaopen_lasync_core opens them in
** order, the runtime's finalizer closes them in reverse order, and the scheduler asks them
** whether anything can still wake a task when libuv's loop is not alive. */
struct lasync__subsystem {
  const char *name;            /* NULL ends the list */
  /* Adds its functions and classes to the lasync.core table at the top. [-0, +0, e] NULL:
  ** nothing to add. */
  void (*open)(lua_State *L, lasync__runtime *rt);
  /* At runtime teardown, before the loop is drained: closes what would outlive the runtime
  ** (handles nobody will close, process-wide state). Runs no Lua. NULL: nothing to close. */
  void (*close)(lasync__runtime *rt);
  /* Work in flight that can wake a task although libuv has nothing active (otherwise every
  ** task waiting means a deadlock). NULL: never. */
  int (*pending)(lasync__runtime *rt);
};
extern const lasync__subsystem lasync__subsystems[];

/* The runtime, from upvalue 1 of every lasync.core function. */
#define lasync__rt(L) ((lasync__runtime *)lua_touserdata((L), lua_upvalueindex(1)))
lasync__runtime *lasync__getruntime(lua_State *L);

/* task.c */
void lasync__open_task(lua_State *L, lasync__runtime *rt);
lasync__fut *lasync__tofut(lua_State *L, lasync__runtime *rt, int idx);
/* The task at idx, or NULL if it is not a task. */
lasync__task *lasync__totask(lua_State *L, lasync__runtime *rt, int idx);
lasync__fut *lasync__checkfut(lua_State *L, lasync__runtime *rt, int idx);
void lasync__push_task(lua_State *L, lasync__runtime *rt, lasync__task *t); /* [-0, +1, -] */
/* Spawns fn (below nargs arguments) as a task and replaces them by it; the spawn site is the
** function at stack `level` (0: none). [-(n+1), +1, e] */
lasync__task *lasync__spawn(lua_State *L, lasync__runtime *rt, int nargs, int level);
void lasync__fut_init(lasync__fut *f, int kind);
int lasync__task_cancel(lasync__runtime *rt, lua_State *L, lasync__task *t);
void lasync__link(lasync__fut *f, lasync__listener *l);  /* appends */
void lasync__unlink(lasync__listener *l);
/* Pushes the extra table of the future or task at idx; creates it if `create`, else may push
** nil. [-0, +1, m] */
int lasync__push_extra(lua_State *L, int idx, int create);
/* Stores values first..top as the results of the future or task at idx (< first), one value
** directly, several as an {n=...} table, and pops them. [-(top-first+1), +0, m] */
void lasync__store_results(lua_State *L, int idx, int first);
/* Stores the outcome in the userdata at idx and wakes listeners and callbacks. */
void lasync__fut_finish(lua_State *L, lasync__runtime *rt, int idx);

/* sched.c */
void lasync__open_sched(lua_State *L, lasync__runtime *rt);
void lasync__enqueue(lasync__runtime *rt, lasync__task *t);
/* Marks a suspended task ready: stops its timer, forgets its op. */
void lasync__wake(lasync__runtime *rt, lasync__task *t);
/* Aborts the op of a suspended task if it is effectively cancelled, and wakes it. */
void lasync__interrupt(lasync__runtime *rt, lasync__task *t);
/* The running task, after checking that L may suspend here; raises a clear error otherwise. */
lasync__task *lasync__check_suspend(lua_State *L, lasync__runtime *rt, const char *what);
/* Raises Cancelled if the task is effectively cancelled (sticky). */
void lasync__check_cancel(lua_State *L, lasync__runtime *rt, lasync__task *t);
/* Registers op_kind and yields; k runs on resume. [-?, +?, e] */
int lasync__suspend(lua_State *L, lasync__runtime *rt, lasync__task *t, int op_kind,
                    lua_KContext ctx, lua_KFunction k);
void lasync__run_ready(lua_State *L, lasync__runtime *rt);
/* Fires due timers and notifiers and runs the loop once (blocking if `block` and nothing is
** ready). Returns 1 instead of blocking when nothing could ever wake a task. */
int lasync__poll_loop(lua_State *L, lasync__runtime *rt, int block);
/* Runs tasks until `until` finished (NULL: until no task is live); 1 on deadlock. */
int lasync__run_until(lua_State *L, lasync__runtime *rt, lasync__task *until);
void lasync__arm_wake(lasync__runtime *rt, double now);
/* The timer of a suspended task is due: wake it (sleep) or interrupt it (deadline). */
void lasync__task_timer(lasync__runtime *rt, lasync__task *t);
void lasync__task_done(lua_State *L, lasync__runtime *rt, lasync__task *t);
extern char lasync__yield_tag;

/* scope.c */
void lasync__open_scope(lua_State *L, lasync__runtime *rt);
/* The scope whose cancellation reaches the task now (outermost), or NULL. Root (task-level
** cancellation) is reported as LASYNC_ROOT_SCOPE. Expires scopes whose deadline passed. */
#define LASYNC_ROOT_SCOPE ((lasync__scope *)1)
lasync__scope *lasync__cancel_origin(lasync__task *t, double now);
double lasync__effective_deadline(lasync__task *t);
void lasync__scopes_release(lua_State *L, lasync__task *t);

/* waitset.c */
void lasync__open_waitset(lua_State *L, lasync__runtime *rt);
void lasync__waitset_abort(lasync__task *t);
/* Node l of a waitset: its future f finished. */
void lasync__waitset_fire(lasync__runtime *rt, lasync__listener *l, lasync__fut *f);

/* error.c */
void lasync__open_error(lua_State *L);
/* Pushes a new error object {kind=, message=}. [-0, +1, m] */
void lasync__push_error(lua_State *L, const char *kind, const char *fmt, ...);
int lasync__is_error_kind(lua_State *L, int idx, const char *kind);
/* Pushes the Cancelled error a task receives now. [-0, +1, m] */
void lasync__push_cancelled(lua_State *L, lasync__runtime *rt, lasync__task *t,
                            lasync__scope *origin);
/* Builds class `cls`: metatable `name` with methods (as __index) and metamethods, every
** function getting the runtime (a light userdata at stack top) as upvalue 1. [-0, +0, m] */
void lasync__newclass(lua_State *L, lasync__runtime *rt, int cls, const char *name,
                      const luaL_Reg *methods, const luaL_Reg *metamethods);
/* Sets the metatable of the value at the top to class cls. [-0, +0, -] */
void lasync__setclass(lua_State *L, lasync__runtime *rt, int cls);
/* The userdata at idx if it is of class cls, else NULL / else raises a type error. */
void *lasync__toclass(lua_State *L, lasync__runtime *rt, int idx, int cls);
void *lasync__checkclass(lua_State *L, lasync__runtime *rt, int idx, int cls);

/* ops.c (external ops, notifiers) */
/* An external op (lasync.h). lasync's own bindings may embed one in memory that lives while
** the task waits (a userdata the waiting call holds on its stack) instead of lasync_op_new's
** userdata: lasync__op_init it before each lasync_op_await. */
struct lasync_op {
  lasync__runtime *rt;
  lasync__task *task;          /* the waiting task while suspended */
  void *data;
  lasync_cancel_fn cancel;
  lasync_deliver_fn deliver;
  int status;
  unsigned char completed;     /* lasync_op_complete was called */
  unsigned char finished;      /* deliver or cancel was called: the host is done with it */
};
void lasync__op_init(lasync_op *op, lasync__runtime *rt);
void lasync__open_ops(lua_State *L, lasync__runtime *rt);
void lasync__op_abort(lasync__task *t);
/* Whether external ops are in flight (the subsystem's pending check). */
int lasync__ops_pending(lasync__runtime *rt);
void lasync__dispatch_notifiers(lua_State *L, lasync__runtime *rt);
void lasync__close_notifiers(lasync__runtime *rt);
/* Closes one notifier (its function is released). [-0, +0, -] */
void lasync__notifier_close(lasync_notifier *n, lua_State *L);

/* http.c */
void lasync__open_http(lua_State *L, lasync__runtime *rt);

/* timer.c */
void lasync__open_timer(lua_State *L, lasync__runtime *rt);

/* fs.c, dns.c, signal.c: async.fs, async.dns, async.signal (the core_* functions they add) */
void lasync__open_fs(lua_State *L, lasync__runtime *rt);
void lasync__open_dns(lua_State *L, lasync__runtime *rt);
void lasync__open_signal(lua_State *L, lasync__runtime *rt);
/* Puts back the dispositions core.interrupts_on replaced, if rt installed them. */
void lasync__close_signal(lasync__runtime *rt);
/* Signal names ("SIGTERM", also "TERM") and numbers; 0 / NULL when unknown. */
int lasync__signal_number(const char *name);
/* dns.c: parses a numeric IPv4 or IPv6 address (with port) into ss; 0 on success. */
int lasync__parse_addr(const char *host, int port, struct sockaddr_storage *ss);
/* Raises the error object of a failed getaddrinfo (status < 0) for the host name at hostidx:
** kind "dns", code ("EAI_NONAME"), host. Does not return. [-0, +0, v] */
int lasync__raise_dns(lua_State *L, int status, int hostidx);
const char *lasync__signal_name(int signum);
/* stream.c: the Stream type (TCP, Unix sockets, pipes, process stdio) and listeners */
void lasync__open_stream(lua_State *L, lasync__runtime *rt);
typedef struct lstream lasync__stream;
/* Pushes a new Stream that owns h: h MUST be malloc'd and initialized (uv_tcp_init,
** uv_pipe_init) on rt's loop; the Stream sets h->data and frees h in its close callback. Does
** not raise after taking h, except for memory errors. [-0, +1, m] */
lasync__stream *lasync__stream_wrap(lua_State *L, lasync__runtime *rt, uv_stream_t *h);
/* Queues data on the stream s without waiting (for a subprocess's stdin given as a string),
** then half-closes it once written. Returns 0 or a uv error. Runs no Lua. */
int lasync__stream_feed(lasync__stream *s, const char *data, size_t len);
/* Whether the data given to lasync__stream_feed is still being written. */
int lasync__stream_feeding(lasync__stream *s);
/* Raises an error object {kind=, code="ENAME", message="ENAME: text (what)"}. Does not
** return. [-0, +0, v] */
int lasync__stream_uverror(lua_State *L, const char *kind, int err, const char *what);

/* {====== req.c: awaited libuv requests, abandoned work, closing the loop ======} */

/* The close callback of a malloc'd handle: frees it. */
void lasync__free_handle(uv_handle_t *h);

/* A libuv request a task awaits (connect, shutdown, getaddrinfo, fs, queued work). Its record
** starts with a lasync__req (the uv request inside it may follow); the seam frees it when the
** second of its two ends comes: the completion (lasync__req_done, from the libuv callback) and
** the task (it takes the results in its deliver function, which MUST call lasync__req_free,
** before it raises too; or it is cancelled). */
typedef struct lasync__reqtype {
  /* The waiting task was cancelled; r->done says whether the completion came already. Runs no
  ** Lua, while the task's stack still holds what the call was given. For a request still in
  ** flight it stops what can be stopped (uv_cancel, uv_close); the completion comes anyway,
  ** later, and frees r. NULL: nothing to do. */
  void (*cancel)(lasync__req *r);
  /* Frees what r holds (r itself is freed after). taken: the deliver function took the
  ** results; else also what nobody took (a connected handle, an opened descriptor). NULL:
  ** nothing to free. */
  void (*release)(lasync__req *r, int taken);
  unsigned char pool;          /* thread-pool work: abandoned, it counts as abandoned work */
} lasync__reqtype;

struct lasync__req {
  const lasync__reqtype *type;
  lasync__runtime *rt;
  lasync__req *next, *prev;    /* in rt->reqs while op != NULL */
  lasync_op *op;               /* the waiting task's op; NULL once the task gave up */
  lasync__abandoned ab;        /* pool work: linked while abandoned and still running */
  int status;                  /* what the completion said */
  unsigned char done;          /* the completion came */
};

/* Pushes the op a new request is awaited with (raising first if the task cannot suspend here)
** and returns a zeroed record of `size` bytes, its lasync__req set up. [-0, +1, e] */
void *lasync__req_new(lua_State *L, const lasync__reqtype *type, size_t size);
/* Suspends the task until the request completes; rc is what the uv_* call that started it
** returned: < 0 means it was refused and no callback will come (r->status = rc). Then
** deliver(L, r, 0) runs in the task. [-?, +?, e] */
int lasync__req_await(lua_State *L, lasync__req *r, int rc, lasync_deliver_fn deliver);
/* The completion, from the libuv callback: wakes the task, or frees an abandoned request.
** Runs no Lua. */
void lasync__req_done(lasync__req *r, int status);
/* Frees r: in its deliver function (the results were taken), or when it could not be started
** (then never free() it: it is linked in the runtime). */
void lasync__req_free(lasync__req *r);
/* Nobody will take r's results (its Lua state is closing): frees it if it completed, else its
** completion will, as when its task is cancelled. Does nothing if its task gave up already.
** Runs no Lua. */
void lasync__req_drop(lasync__req *r);
/* The subsystem's close: drops every request a task still waits for (the Lua state is
** closing; in a host's loop their callbacks may come after lua_close). */
void lasync__close_reqs(lasync__runtime *rt);

/* Abandoned thread-pool work: linked when its task gave up on it (lasync__abandon), unlinked
** when its callback runs (lasync__abandon_end, harmless when not linked). Neither runs Lua. */
void lasync__abandon(lasync__runtime *rt, lasync__abandoned *a);
void lasync__abandon_end(lasync__abandoned *a);
/* uv_loop_alive, not counting abandoned work */
int lasync__loop_alive(lasync__runtime *rt);
/* Runs the runtime's own loop until it can be closed, giving abandoned work a short grace
** (then warns and gives up: the loop stays allocated). Returns 1 if it was closed. */
int lasync__close_loop(lua_State *L, lasync__runtime *rt);
/* Unlinks the abandoned work still running: its callbacks must not find the runtime. */
void lasync__forget_abandoned(lasync__runtime *rt);

/* process.c: subprocesses */
void lasync__open_process(lua_State *L, lasync__runtime *rt);
/* Closes the handles of the children still running (they go on running, unreaped), so that
** the loop can close and no callback comes after the runtime is gone. At runtime teardown. */
void lasync__close_processes(lasync__runtime *rt);
/* context.c: task-local contexts (async.ContextVar). With rt->ctx_used only: the new task in
** `slot` starts with the running task's context (or the one outside tasks); a finished task's
** context is dropped. [-0, +0, -] */
void lasync__open_context(lua_State *L, lasync__runtime *rt);
void lasync__context_inherit(lua_State *L, lasync__runtime *rt, int slot);
void lasync__context_clear(lua_State *L, lasync__runtime *rt, int slot);
/* thread.c: core.to_thread (libuv's thread pool, worker Lua states) */
void lasync__open_thread(lua_State *L, lasync__runtime *rt);

#endif
