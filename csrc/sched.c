/*
** sched.c: the scheduler. Tasks are coroutines that run a C trampoline; every suspension goes
** through lasync__suspend (a tagged lua_yieldk), and the scheduler resumes ready tasks from one
** place (lasync__run_ready). libuv callbacks and timer fires only mark tasks ready.
**
** Coroutines are reused: when a task body returns, the trampoline yields `done_tag` and waits
** for the next body, so a finished task gives its coroutine back to a pool.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

char lasync__yield_tag;        /* first value of every runtime suspension */
static char done_tag;          /* the trampoline finished a body */

#define POOL_MAX 1024
#define POLL_INTERVAL 0.001    /* seconds between I/O polls while tasks stay ready */
#define POLL_CHECK_EVERY 8     /* passes between two looks at the clock for that */

/* {====== ready queue and wake-ups ======} */

static void on_idle(uv_idle_t *h) {
  (void)h;  /* an active idle handle only keeps libuv from blocking in its poll */
}

/* A task became ready from inside a libuv callback: libuv ran its timers before it computes
** how long to block, and would sleep through it. An active idle handle makes that a 0 wait. */
static void keep_awake(lasync__runtime *rt) {
  if (rt->idle == NULL) {
    rt->idle = malloc(sizeof *rt->idle);
    if (rt->idle == NULL) abort();
    uv_idle_init(rt->loop, rt->idle);
  }
  uv_idle_start(rt->idle, on_idle);
  rt->idle_on = 1;
}

static void let_sleep(lasync__runtime *rt) {
  if (rt->idle_on) {
    uv_idle_stop(rt->idle);
    rt->idle_on = 0;
  }
}

void lasync__enqueue(lasync__runtime *rt, lasync__task *t) {
  if (t->queued) return;
  if (rt->in_uv && !rt->idle_on) keep_awake(rt);
  t->queued = 1;
  t->next = NULL;
  if (rt->ready_tail)
    rt->ready_tail->next = t;
  else
    rt->ready_head = t;
  rt->ready_tail = t;
}

void lasync__wake(lasync__runtime *rt, lasync__task *t) {
  lasync__timer_stop(rt, &t->timer);
  if (t->op_kind == LASYNC_OP_AWAIT) lasync__unlink(&t->w.wait);
  t->op_kind = LASYNC_OP_NONE;
  lasync__enqueue(rt, t);
}

void lasync__interrupt(lasync__runtime *rt, lasync__task *t) {
  switch (t->op_kind) {
    case LASYNC_OP_NONE: case LASYNC_OP_YIELD:
      return;  /* running or already ready: the continuation checks */
    default: break;
  }
  if (lasync__cancel_origin(t, lasync__now()) == NULL) return;  /* shielded */
  switch (t->op_kind) {
    case LASYNC_OP_WAITSET: lasync__waitset_abort(t); break;
    case LASYNC_OP_EXTERN: lasync__op_abort(t); break;
    default: break;  /* sleep and await are undone by lasync__wake */
  }
  lasync__wake(rt, t);
}

void lasync__task_timer(lasync__runtime *rt, lasync__task *t) {
  /* the timer was armed for the earlier of the sleep's end and the effective deadline */
  if (t->op_kind == LASYNC_OP_SLEEP &&
      (t->nscopes == 0 || lasync__effective_deadline(t) > t->timer.when)) {
    lasync__wake(rt, t);
    return;
  }
  lasync__interrupt(rt, t);  /* a deadline passed */
}

/* {====== suspension ======} */

static int is_passthrough(lua_State *L, lasync__runtime *rt) {
  int yes;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->passthrough_ref);
  lua_pushthread(L);
  yes = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return yes;
}

lasync__task *lasync__check_suspend(lua_State *L, lasync__runtime *rt, const char *what) {
  lasync__task *t = rt->current;
  if (t == NULL)
    luaL_error(L, "%s must be called from a task (inside async.run, or in a script run by the "
               "lasync interpreter)", what);
  if (L != t->co && !is_passthrough(L, rt))
    luaL_error(L, "%s cannot suspend a plain coroutine running inside a task; create the "
               "coroutine with async.wrap(fn) so that it can await", what);
  if (!lua_isyieldable(L))
    luaL_error(L, "%s cannot suspend here: it was called from C code that cannot yield (a "
               "require'd chunk, a table.sort comparator, a string.gsub callback, a metamethod, "
               "__gc or an on_done callback); await outside that call, or spawn a task there "
               "and await it from the outside", what);
  return t;
}

void lasync__check_cancel(lua_State *L, lasync__runtime *rt, lasync__task *t) {
  lasync__scope *origin;
  if (!t->cancel_requested && t->nscopes == 0) return;
  origin = lasync__cancel_origin(t, lasync__now());
  if (origin == NULL) return;
  lasync__push_cancelled(L, rt, t, origin);
  lua_error(L);
}

int lasync__suspend(lua_State *L, lasync__runtime *rt, lasync__task *t, int op_kind,
                    lua_KContext ctx, lua_KFunction k) {
  double when = op_kind == LASYNC_OP_SLEEP ? t->timer.when : HUGE_VAL;
  t->op_kind = (unsigned char)op_kind;
  if (t->nscopes && op_kind != LASYNC_OP_YIELD) {
    double d = lasync__effective_deadline(t);
    if (d < when) when = d;
  }
  if (when < HUGE_VAL) lasync__timer_start(rt, &t->timer, when);
  lua_pushlightuserdata(L, &lasync__yield_tag);
  return lua_yieldk(L, 1, ctx, k);
}

/* {====== the trampoline: runs task bodies inside the coroutine ======} */

static void set_extra_field(lua_State *L, lasync__runtime *rt, lasync__task *t,
                            const char *field) {
  /* [-1, +0, m]: extra[field] = top */
  lasync__push_task(L, rt, t);
  lasync__push_extra(L, -1, 1);
  lua_rotate(L, -3, -1);  /* value on top: task, extra, value */
  lua_setfield(L, -2, field);
  lua_pop(L, 2);
}

static int describe_error(lua_State *L) {
  luaL_tolstring(L, 1, NULL);  /* may call __tostring: runs protected */
  return 1;
}

/* Pushes "\n\nit was raised in an awaited task:\n" and that task's traceback when the error
** at err_idx is the error of the task that await/result re-raised in t (extra.cause); returns
** the number of values pushed. Clears extra.cause. */
static int push_cause(lua_State *co, lasync__runtime *rt, lasync__task *t, int err_idx) {
  int n = 0, top = lua_gettop(co);
  lasync__fut *cf;
  lasync__push_task(co, rt, t);
  if (lua_getiuservalue(co, -1, LASYNC_UV_EXTRA) != LUA_TTABLE) goto out;
  lua_getfield(co, -1, "cause");
  lua_pushnil(co);
  lua_setfield(co, -3, "cause");
  cf = lasync__tofut(co, rt, -1);
  if (cf == NULL || cf->kind != LASYNC_KIND_TASK) goto out;
  lua_getiuservalue(co, -1, LASYNC_UV_RESULT);
  if (!lua_rawequal(co, -1, err_idx)) goto out;
  if (lua_getiuservalue(co, -2, LASYNC_UV_EXTRA) != LUA_TTABLE) goto out;
  if (lua_getfield(co, -1, "traceback") != LUA_TSTRING) goto out;
  lua_pushliteral(co, "\n\nit was raised in an awaited task:\n");
  lua_insert(co, -2);
  lua_rotate(co, top + 1, 2);  /* move both to the bottom of what we pushed */
  n = 2;
out:
  lua_settop(co, top + n);
  return n;
}

/* The message handler of every task body: captures the traceback where the error was raised,
** names the task and where it was spawned, and appends the traceback of the task the error came
** from when await re-raised it. The error value itself passes through unchanged. */
static int msgh(lua_State *co) {
  lasync__runtime *rt = lasync__rt(co);
  lasync__task *t = rt->current;
  if (t == NULL || lasync__is_error_kind(co, 1, "cancelled")) return 1;
  lua_settop(co, 1);
  lua_pushcfunction(co, describe_error);
  lua_pushvalue(co, 1);
  if (lua_pcall(co, 1, 1, 0) != LUA_OK || !lua_isstring(co, -1)) {
    lua_pop(co, 1);
    lua_pushstring(co, "(error object is not a string)");
  }
  luaL_traceback(co, co, lua_tostring(co, -1), 1);
  lua_remove(co, 2);
  lua_pushliteral(co, "\n");
  lasync__push_task(co, rt, t);
  lua_getfield(co, -1, "_describe");
  lua_insert(co, -2);
  lua_call(co, 1, 1);  /* "task 'name' (spawned at file:line)" */
  push_cause(co, rt, t, 1);
  lua_concat(co, lua_gettop(co) - 1);
  set_extra_field(co, rt, t, "traceback");
  return 1;
}

static int body_run(lua_State *co);

static int body_next(lua_State *co, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return body_run(co);
}

/* The body finished: hands the outcome to the scheduler, which stores it (the coroutine must
** stay anchored by its task until it is back in the pool), then waits for the next body. */
static int body_k(lua_State *co, int status, lua_KContext ctx) {
  lasync__task *t = (lasync__task *)lua_touserdata(co, 1);
  (void)ctx;
  if (status == LUA_OK || status == LUA_YIELD)
    t->fut.state = LASYNC_OK;
  else
    t->fut.state = lasync__is_error_kind(co, -1, "cancelled") ? LASYNC_CANCELLED : LASYNC_ERROR;
  lua_pushlightuserdata(co, &done_tag);
  lua_replace(co, 2);  /* was msgh */
  lua_remove(co, 1);   /* the task */
  return lua_yieldk(co, lua_gettop(co), 0, body_next);
}

/* stack: task, fn, args... */
static int body_run(lua_State *co) {
  int nargs = lua_gettop(co) - 2;
  lua_pushvalue(co, lua_upvalueindex(2));  /* msgh */
  lua_insert(co, 2);
  return body_k(co, lua_pcallk(co, nargs, LUA_MULTRET, 2, 0, body_k), 0);
}

/* {====== stepping tasks ======} */

/* Pushes an idle coroutine (from the pool, or a new one holding the trampoline). */
static lua_State *get_coroutine(lua_State *L, lasync__runtime *rt) {
  lua_State *co;
  if (rt->npool > 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->pool_ref);
    lua_rawgeti(L, -1, rt->npool);
    lua_pushnil(L);
    lua_rawseti(L, -3, rt->npool--);
    lua_remove(L, -2);
    return lua_tothread(L, -1);
  }
  co = lua_newthread(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &done_tag);  /* the trampoline closure */
  lua_xmove(L, co, 1);
  return co;
}

/* Takes the coroutine from the task (slot 1); pools it if it can run another body. */
static void release_coroutine(lua_State *L, lasync__runtime *rt, lasync__task *t, int reuse) {
  lasync__push_task(L, rt, t);
  if (reuse && rt->npool < POOL_MAX) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->pool_ref);
    lua_getiuservalue(L, -2, LASYNC_UV_CO);
    lua_rawseti(L, -2, ++rt->npool);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_setiuservalue(L, -2, LASYNC_UV_CO);
  lua_pop(L, 1);
  t->co = NULL;
}

/* Stores values first..top of L as the task's outcome: its results, or (when it failed) the
** error value alone. [-(top-first+1), +0, m] */
static void store_outcome(lua_State *L, lasync__runtime *rt, lasync__task *t, int first) {
  if (t->fut.state != LASYNC_OK) lua_settop(L, first);  /* an error is one value */
  lasync__push_task(L, rt, t);
  lua_insert(L, first);
  lasync__store_results(L, first, first + 1);
  lua_pop(L, 1);
}

static void step(lua_State *L, lasync__runtime *rt, lasync__task *t) {
  lua_State *co = t->co;
  int nargs = 0, nres = 0, status;
  if (co == NULL) {  /* first step */
    int i, ti;
    if (t->cancel_requested) {  /* cancelled before it started: never run the body */
      t->fut.state = LASYNC_CANCELLED;
      lasync__push_cancelled(L, rt, t, LASYNC_ROOT_SCOPE);
      store_outcome(L, rt, t, lua_gettop(L));
      lasync__task_done(L, rt, t);
      return;
    }
    co = get_coroutine(L, rt);
    lasync__push_task(L, rt, t);
    ti = lua_gettop(L);
    lua_pushvalue(L, ti);
    lua_getiuservalue(L, ti, LASYNC_UV_FN);
    for (i = 0; i < t->nargs; i++) {  /* move the arguments out: the coroutine holds them */
      lua_getiuservalue(L, ti, LASYNC_UV_ARGS + i);
      lua_pushnil(L);
      lua_setiuservalue(L, ti, LASYNC_UV_ARGS + i);
    }
    lua_pushvalue(L, ti - 1);
    lua_setiuservalue(L, ti, LASYNC_UV_CO);  /* the task anchors its coroutine */
    nargs = t->nargs + 2;
    lua_xmove(L, co, nargs);
    lua_pop(L, 2);  /* task, coroutine */
    t->co = co;
  }
  t->op_kind = LASYNC_OP_NONE;  /* whatever it waited for is over (sleep(0) leaves YIELD) */
  rt->current = t;
  status = lua_resume(co, L, nargs, &nres);
  rt->current = NULL;
  if (status == LUA_YIELD) {
    void *tag = nres > 0 ? lua_touserdata(co, -nres) : NULL;
    if (tag == &lasync__yield_tag) {  /* suspended in an op */
      lua_pop(co, nres);
      return;
    }
    if (tag == &done_tag) {
      int first = lua_gettop(L);  /* the tag's position once moved */
      luaL_checkstack(L, nres, "too many results");
      lua_xmove(co, L, nres);
      release_coroutine(L, rt, t, 1);
      store_outcome(L, rt, t, first + 2);
      lua_pop(L, 1);  /* the tag */
      lasync__task_done(L, rt, t);
      return;
    }
    lua_pop(co, nres);
    lasync__push_error(L, "invalid", "coroutine.yield() was called directly in task body; "
                       "use async.sleep(0) or async.yield() to let other tasks run, or "
                       "async.wrap(fn) for a generator that can await");
  } else if (status == LUA_OK) {
    lasync__push_error(L, "invalid", "task trampoline returned");  /* cannot happen */
  } else {
    lua_xmove(co, L, 1);  /* an error outside the body's protected call */
  }
  /* the coroutine is unusable: close its pending to-be-closed variables and drop it */
  t->op_kind = LASYNC_OP_NONE;
  lasync__closethread(co, L);
  release_coroutine(L, rt, t, 0);
  t->fut.state = LASYNC_ERROR;
  store_outcome(L, rt, t, lua_gettop(L));
  lasync__task_done(L, rt, t);
}

void lasync__run_ready(lua_State *L, lasync__runtime *rt) {
  /* run each task that is ready now once; tasks made ready meanwhile wait for the next pass */
  lasync__task *t = rt->ready_head;
  int n = 0;
  for (; t; t = t->next) n++;
  while (n-- > 0 && (t = rt->ready_head) != NULL) {
    rt->ready_head = t->next;
    if (rt->ready_head == NULL) rt->ready_tail = NULL;
    t->next = NULL;
    t->queued = 0;
    if (t->fut.state == LASYNC_PENDING) step(L, rt, t);
  }
}

/* {====== polling the loop ======} */

static void on_wake(uv_timer_t *h) {
  /* The scheduler fires due timers after uv_run returns. But libuv runs due timers before it
  ** computes its poll timeout: when the loop's cached time was stale (tasks ran for a while),
  ** this timer fires at the start of uv_run and, with no other timer, the poll would block
  ** forever on busy I/O handles. An active idle handle makes that poll return at once. */
  keep_awake((lasync__runtime *)h->data);
}

void lasync__arm_wake(lasync__runtime *rt, double now) {
  double delay;
  if (rt->wake == NULL) {
    rt->wake = malloc(sizeof *rt->wake);
    if (rt->wake == NULL) abort();
    uv_timer_init(rt->loop, rt->wake);
    rt->wake->data = rt;
  }
  if (rt->ready_head || rt->notify_head) {
    uv_timer_stop(rt->wake);
    keep_awake(rt);  /* the host's next poll must not block */
    return;
  }
  let_sleep(rt);
  delay = lasync__timers_next(rt, now);
  if (delay == HUGE_VAL) {
    uv_timer_stop(rt->wake);
    return;
  }
  delay = ceil(delay * 1000.0);
  if (delay < 0) delay = 0;
  if (delay > 1e9) delay = 1e9;
  uv_update_time(rt->loop);  /* relative to now, not to libuv's time cached at the last poll */
  uv_timer_start(rt->wake, on_wake, (uint64_t)delay, 0);
}

/* Whether a subsystem has work in flight that can wake a task although libuv's loop is not
** alive (an external op a host completes). */
static int pending(lasync__runtime *rt) {
  const lasync__subsystem *s;
  for (s = lasync__subsystems; s->name; s++)
    if (s->pending && s->pending(rt)) return 1;
  return 0;
}

/* Returns 0 normally, or 1 when blocking was asked for but nothing can ever wake a task. */
int lasync__poll_loop(lua_State *L, lasync__runtime *rt, int block) {
  double now = lasync__now();
  lasync__timers_run(rt, now);
  lasync__dispatch_notifiers(L, rt);
  if (rt->ready_head) block = 0;
  if (block) {
    lasync__arm_wake(rt, now);
    if (!lasync__loop_alive(rt) && !pending(rt)) return 1;
  }
  rt->in_uv = 1;
  uv_run(rt->loop, block ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  rt->in_uv = rt->hosted;
  let_sleep(rt);
  rt->last_poll = lasync__now();
  lasync__timers_run(rt, rt->last_poll);
  lasync__dispatch_notifiers(L, rt);
  return 0;
}

/* Runs the scheduler until `until` finished (or, with until == NULL, until no task is live).
** Returns 0, or 1 on a deadlock: no task is ready and nothing can wake one. */
int lasync__run_until(lua_State *L, lasync__runtime *rt, lasync__task *until) {
  unsigned passes = 0;
  for (;;) {
    if (rt->ready_head) lasync__run_ready(L, rt);
    if (until ? until->fut.state != LASYNC_PENDING : rt->ntasks == 0) return 0;
    if (rt->ready_head) {  /* busy: still poll I/O and timers about every POLL_INTERVAL */
      if (++passes % POLL_CHECK_EVERY == 0 && lasync__now() - rt->last_poll >= POLL_INTERVAL)
        lasync__poll_loop(L, rt, 0);
    } else if (lasync__poll_loop(L, rt, 1)) {
      return 1;
    }
  }
}

void lasync__open_sched(lua_State *L, lasync__runtime *rt) {
  /* the trampoline closure, kept in the registry: upvalues rt, msgh */
  lua_pushlightuserdata(L, rt);
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, msgh, 1);
  lua_pushcclosure(L, body_run, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &done_tag);
}
