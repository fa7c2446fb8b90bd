/*
** loop.c: the runtime object (one per Lua state), luaopen_lasync_core, async.run and the
** embedding entry points of lasync.h. The subsystems it opens and closes are listed in
** subsys.c; none of them calls into this file.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static void close_wake(lasync__runtime *rt) {
  if (rt->wake) {
    uv_close((uv_handle_t *)rt->wake, lasync__free_handle);
    rt->wake = NULL;
  }
  if (rt->idle) {
    uv_close((uv_handle_t *)rt->idle, lasync__free_handle);
    rt->idle = NULL;
    rt->idle_on = 0;
  }
}

/* {====== shutdown ======} */

static void cancel_all(lua_State *L, lasync__runtime *rt) {
  int i;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->live_ref);
  for (i = 1; i <= rt->nslots; i++) {
    if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA) {
      lasync__task *t = (lasync__task *)lua_touserdata(L, -1);
      if (!t->cancel_requested) lasync__task_cancel(rt, L, t);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Ends a task that cannot finish by itself (a shielded wait nothing can end): aborts its op,
** closes its coroutine, and finishes it as cancelled. */
static void kill_task(lua_State *L, lasync__runtime *rt, lasync__task *t) {
  lasync__timer_stop(rt, &t->timer);
  if (t->op_kind == LASYNC_OP_AWAIT) lasync__unlink(&t->w.wait);
  if (t->op_kind == LASYNC_OP_WAITSET) lasync__waitset_abort(t);
  if (t->op_kind == LASYNC_OP_EXTERN) lasync__op_abort(t);
  t->op_kind = LASYNC_OP_NONE;
  if (t->co) {
    lasync__closethread(t->co, L);
    lasync__push_task(L, rt, t);
    lua_pushnil(L);
    lua_setiuservalue(L, -2, LASYNC_UV_CO);
    lua_pop(L, 1);
    t->co = NULL;
  }
  lasync__push_task(L, rt, t);
  lasync__push_error(L, "cancelled", "task abandoned at shutdown: it did not finish after it "
                     "was cancelled");
  lua_setiuservalue(L, -2, LASYNC_UV_RESULT);
  lua_pop(L, 1);
  t->fut.state = LASYNC_CANCELLED;
  lasync__task_done(L, rt, t);
}

static void shutdown_tasks(lua_State *L, lasync__runtime *rt) {
  rt->shutting_down = 1;
  while (rt->ntasks > 0) {
    cancel_all(L, rt);
    if (lasync__run_until(L, rt, NULL)) {
      int i, n = rt->ntasks;
      lua_pushfstring(L, "lasync: %d task(s) did not finish after being cancelled (a shielded "
                      "wait that nothing can end); abandoning them", n);
      lua_warning(L, lua_tostring(L, -1), 0);
      lua_pop(L, 1);
      lua_rawgeti(L, LUA_REGISTRYINDEX, rt->live_ref);
      for (i = 1; i <= rt->nslots; i++) {
        if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA)
          kill_task(L, rt, (lasync__task *)lua_touserdata(L, -1));
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  }
  rt->shutting_down = 0;
}

static void report_failures(lua_State *L, lasync__runtime *rt) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->failed_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_getmetatable(L, -1);
    lua_getfield(L, -1, "__gc");  /* the task finalizer reports once */
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, LUA_REGISTRYINDEX, rt->failed_ref);
}

/* {====== async.run ======} */

static int run_protected(lua_State *L) {
  lasync__runtime *rt = (lasync__runtime *)lua_touserdata(L, 1);
  lasync__task *main;
  lua_remove(L, 1);
  main = lasync__spawn(L, rt, lua_gettop(L) - 1, 2);
  lua_getfield(L, 1, "set_name");
  lua_pushvalue(L, 1);
  lua_pushliteral(L, "main");
  lua_call(L, 2, 0);
  if (lasync__run_until(L, rt, main)) {
    /* every task waits and nothing can wake one: cancel main, so that it unwinds */
    lasync__push_task(L, rt, main);
    lua_getfield(L, -1, "cancel");
    lua_insert(L, -2);
    lua_pushliteral(L, "deadlock: every task is waiting and nothing can wake any of them");
    lua_call(L, 2, 0);
    if (lasync__run_until(L, rt, main)) kill_task(L, rt, main);
  }
  shutdown_tasks(L, rt);
  return 1;
}

static int loop_run(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  int status, n = lua_gettop(L);
  lasync__fut *main;
  if (rt->running)
    luaL_error(L, "async.run: a loop is already running in this Lua state (spawn a task, or "
               "await, instead)");
  if (rt->hosted)
    luaL_error(L, "async.run: the host drives the loop of this Lua state; spawn tasks instead");
  luaL_checkany(L, 1);
  rt->running = 1;
  rt->last_poll = lasync__now();
  lua_pushcfunction(L, run_protected);
  lua_insert(L, 1);
  lua_pushlightuserdata(L, rt);
  lua_insert(L, 2);
  status = lua_pcall(L, n + 1, 1, 0);
  close_wake(rt);
  uv_run(rt->loop, UV_RUN_NOWAIT);  /* runs the close callbacks */
  rt->running = 0;
  rt->shutting_down = 0;
  if (status != LUA_OK) return lua_error(L);
  main = (lasync__fut *)lua_touserdata(L, -1);
  main->retrieved = 1;
  report_failures(L, rt);
  lua_getfield(L, -1, "result");
  lua_insert(L, -2);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int loop_running(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lua_pushboolean(L, rt->running || rt->hosted);
  return 1;
}

/* core.passthrough(co): lets co (a coroutine created by async.wrap) suspend its task */
static int loop_passthrough(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  luaL_checktype(L, 1, LUA_TTHREAD);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->passthrough_ref);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  return 0;
}

/* core.new_error(kind, message [, fields]) -> an error object; fields are copied into it */
static int loop_new_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lasync__push_error(L, kind, "%s", msg);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* {====== the runtime object ======} */

static int runtime__gc(lua_State *L) {
  lasync__runtime *rt = (lasync__runtime *)lua_touserdata(L, 1);
  const lasync__subsystem *s = lasync__subsystems;
  while (s->name) s++;
  while (s-- > lasync__subsystems)  /* in reverse order of opening */
    if (s->close) s->close(rt);
  close_wake(rt);
  if (rt->owns_loop && rt->loop) {
    /* abandoned work that is still stuck on a thread (a FIFO nobody opens) keeps the loop
    ** and its own memory: they stay allocated, so that a late completion touches no freed
    ** memory; nothing runs their callbacks any more */
    if (lasync__close_loop(L, rt)) free(rt->own_loop);
    rt->own_loop = NULL;
    rt->loop = NULL;
  }
  lasync__forget_abandoned(rt);  /* their callbacks may still run (in a host's loop) */
  free(rt->heap);
  rt->heap = NULL;
  rt->nheap = 0;
  free(rt->free_slots);
  rt->free_slots = NULL;
  return 0;
}

static int new_ref_table(lua_State *L, const char *mode) {
  lua_newtable(L);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static lasync__runtime *new_runtime(lua_State *L) {
  lasync__runtime *rt = (lasync__runtime *)lua_newuserdatauv(L, sizeof *rt, 0);
  memset(rt, 0, sizeof *rt);
  if (luaL_newmetatable(L, LASYNC_RUNTIME_MT)) {
    lua_pushcfunction(L, runtime__gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LASYNC_HOSTLOOP_KEY) == LUA_TLIGHTUSERDATA) {
    rt->loop = (uv_loop_t *)lua_touserdata(L, -1);
    rt->hosted = 1;
    rt->in_uv = 1;  /* the host's uv_run may make tasks ready at any time */
  } else {
    rt->own_loop = (uv_loop_t *)malloc(sizeof *rt->own_loop);
    if (rt->own_loop == NULL || uv_loop_init(rt->own_loop) != 0) {
      free(rt->own_loop);
      rt->own_loop = NULL;
      luaL_error(L, "lasync: cannot create a libuv loop");
    }
    rt->loop = rt->own_loop;
    rt->owns_loop = 1;
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  rt->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  rt->live_ref = new_ref_table(L, NULL);
  rt->pool_ref = new_ref_table(L, NULL);
  rt->failed_ref = new_ref_table(L, "k");
  rt->passthrough_ref = new_ref_table(L, "k");
  rt->notifiers_ref = new_ref_table(L, NULL);
  rt->parked_ref = new_ref_table(L, NULL);
  lua_setfield(L, LUA_REGISTRYINDEX, LASYNC_RUNTIME_KEY);  /* created first, finalized last */
  lasync__open_error(L);
  lasync__open_sched(L, rt);
  return rt;
}

LASYNC_API int luaopen_lasync_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"run", loop_run}, {"running", loop_running}, {"passthrough", loop_passthrough},
    {"new_error", loop_new_error}, {NULL, NULL}
  };
  lasync__runtime *rt = lasync__getruntime(L);
  const lasync__subsystem *s;
  if (rt == NULL) rt = new_runtime(L);
  lua_newtable(L);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
  for (s = lasync__subsystems; s->name; s++)
    if (s->open) s->open(L, rt);
  lua_pushlightuserdata(L, &lasync__yield_tag);
  lua_setfield(L, -2, "TAG");
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->mtref[LASYNC_CLS_TASK]);
  lua_setfield(L, -2, "task_mt");
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->mtref[LASYNC_CLS_FUTURE]);
  lua_setfield(L, -2, "future_mt");
  lua_pushliteral(L, LASYNC_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

/* {====== embedding ======} */

LASYNC_API void lasync_set_loop(lua_State *L, uv_loop_t *loop) {
  lua_pushlightuserdata(L, loop);
  lua_setfield(L, LUA_REGISTRYINDEX, LASYNC_HOSTLOOP_KEY);
}

LASYNC_API uv_loop_t *lasync_loop(lua_State *L) {
  lasync__runtime *rt = lasync__getruntime(L);
  return rt ? rt->loop : NULL;
}

static lasync__runtime *check_runtime(lua_State *L) {
  lasync__runtime *rt = lasync__getruntime(L);
  if (rt == NULL) luaL_error(L, "lasync.core is not open in this Lua state");
  return rt;
}

LASYNC_API void lasync_spawn(lua_State *L, int nargs) {
  lasync__spawn(L, check_runtime(L), nargs, 0);
}

LASYNC_API int lasync_step(lua_State *L) {
  lasync__runtime *rt = check_runtime(L);
  if (rt->running || rt->current)
    luaL_error(L, "lasync_step: called from inside a task or async.run");
  rt->running = 1;
  rt->in_uv = 0;
  lasync__timers_run(rt, lasync__now());
  lasync__dispatch_notifiers(L, rt);
  lasync__run_ready(L, rt);
  rt->running = 0;
  rt->in_uv = rt->hosted;
  lasync__arm_wake(rt, lasync__now());
  return rt->ntasks;
}
