/*
** lasync.h: the public C API of lasync, for hosts that embed Lua and want async scripting.
**
** One runtime lives in each Lua state. It is created by luaopen_lasync_core (directly, or through
** require("lasync.core") / require("lasync")). By default the runtime owns its libuv loop and
** scripts drive it with async.run(fn). A host that already runs a libuv loop calls
** lasync_set_loop() before opening the module, then calls lasync_step() from its own loop
** (for example after each uv_run(loop, UV_RUN_ONCE)); tasks then run between the host's events.
**
** A host C function can suspend the calling task until the host's own callback completes the
** operation (a C-level future): see lasync_op_new / lasync_op_await / lasync_op_complete.
*/
#ifndef LASYNC_H
#define LASYNC_H

#include <uv.h>
#include "lua.h"

#define LASYNC_VERSION "0.1.0"

#ifndef LASYNC_API
#define LASYNC_API __attribute__((visibility("default"))) extern
#endif

/* Opens the C module: pushes the `lasync.core` table. [-0, +1, m] */
LASYNC_API int luaopen_lasync_core(lua_State *L);

/* Makes the runtime of L use the host's loop instead of its own. MUST be called before
** luaopen_lasync_core runs in L. The loop MUST outlive the Lua state. [-0, +0, m] */
LASYNC_API void lasync_set_loop(lua_State *L, uv_loop_t *loop);

/* The loop the runtime of L uses (its own or the host's), or NULL if the module is not open.
** [-0, +0, -] */
LASYNC_API uv_loop_t *lasync_loop(lua_State *L);

/* Spawns a task: pops a function and nargs arguments, pushes the new Task. The task runs at the
** next scheduler pass (async.run's loop, or the host's next lasync_step). Raises on bad
** arguments. [-(nargs+1), +1, e] */
LASYNC_API void lasync_spawn(lua_State *L, int nargs);

/* For hosts that drive the loop themselves: fires expired timers, then runs every task that is
** ready (once each), then arms the runtime's wake-up timer so that the host's next
** uv_run(loop, UV_RUN_ONCE) returns when a task is due. MUST NOT be called from inside a task or
** from inside async.run. Returns the number of live tasks. Raises only on misuse. [-0, +0, e] */
LASYNC_API int lasync_step(lua_State *L);

/*
** External operations (C-level futures).
**
**   static int host_fetch(lua_State *L) {
**     lasync_op *op = lasync_op_new(L);           -- raises if not called from a task: allocate
**     struct req *r = malloc(sizeof *r);          --   nothing of yours before it
**     r->op = op;
**     start_request(r);                           -- the host's own operation
**     return lasync_op_await(L, op, r, deliver_result, cancel_request);  -- suspends the task
**   }
**   void on_request_done(struct req *r) {        -- the host's callback, later
**     lasync_op_complete(r->op, 0);              -- marks the task ready; runs no Lua
**   }
**
** Exactly one of `deliver` and `cancel` is called for each awaited op. When the task resumes,
** `deliver(L, data, status)` runs inside the task: it pushes the results and returns their number
** (or raises), and frees what it must. If the task is cancelled first (also when a cancellation
** was already pending at lasync_op_await, or arrived after lasync_op_complete but before the task
** resumed), `cancel(data)` is called instead, at once, from whichever code cancelled the task; it
** MUST NOT run Lua. After deliver or cancel was called, the op is gone: the host MUST NOT pass it
** to lasync_op_complete (again) or use it in any way. Calling lasync_op_complete more than once
** before that is harmless (the first status wins).
*/
typedef struct lasync_op lasync_op;
typedef int (*lasync_deliver_fn)(lua_State *L, void *data, int status);
typedef void (*lasync_cancel_fn)(void *data);

/* Creates an op for the running task and pushes it (keep it on the stack until
** lasync_op_await). Raises only if not called from a task that can suspend. [-0, +1, e] */
LASYNC_API lasync_op *lasync_op_new(lua_State *L);

/* Suspends the running task until lasync_op_complete(op, ...); use it as
** `return lasync_op_await(L, op, data, deliver, cancel);` from a lua_CFunction. If the task is
** already cancelled, calls cancel(data) and raises the Cancelled error. [-?, +?, e] */
LASYNC_API int lasync_op_await(lua_State *L, lasync_op *op, void *data,
                               lasync_deliver_fn deliver, lasync_cancel_fn cancel);

/* Completes op with a host-defined status (passed to deliver). Runs no Lua code: safe from any
** libuv callback on the loop's thread. See above for when it MUST NOT be called. */
LASYNC_API void lasync_op_complete(lasync_op *op, int status);

/*
** Notifiers: wake Lua from a signal handler or another thread.
** lasync_notifier_new pops a function and returns a handle; each lasync_notify(h) (async-signal-
** safe and thread-safe: it is uv_async_send) makes the runtime spawn a task that runs the
** function, at its next scheduler pass. Several notifications before that pass coalesce into
** one. An open notifier counts as something that may wake a task, so async.run does not treat
** "every task waits" as a deadlock while one is open; lasync_notifier_unref makes it not count
** (for signal handlers that may never fire). The notifier lives until it is closed from Lua
** (n:close()) or the Lua state closes. [-1, +0, e]
*/
typedef struct lasync_notifier lasync_notifier;
LASYNC_API lasync_notifier *lasync_notifier_new(lua_State *L);
LASYNC_API void lasync_notify(lasync_notifier *n);
LASYNC_API void lasync_notifier_unref(lasync_notifier *n);

/*
** Signals. While a script watches a signal (async.signal.wait / async.signal.on), libuv's
** handler replaces the process's; when the last watcher of that signal closes, libuv resets it
** to SIG_DFL. The hook, if set, is called right after that (on the loop's thread, never from a
** signal handler), so that a host can reinstall its own handler for the signals it owns. One
** hook per process (signals are process-wide); NULL removes it.
*/
LASYNC_API void lasync_set_signal_hook(void (*hook)(int signum));

#endif
