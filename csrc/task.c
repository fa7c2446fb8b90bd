/*
** task.c: futures and tasks. A task is a future whose outcome is the result of a function run
** in its own coroutine. Outcomes live in the userdata's user values (see internal.h), so a
** task that returns one value allocates nothing but its userdata.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* {====== listeners ======} */

void lasync__fut_init(lasync__fut *f, int kind) {
  memset(f, 0, sizeof *f);
  f->kind = (unsigned char)kind;
  f->listeners.next = f->listeners.prev = &f->listeners;
}

void lasync__link(lasync__fut *f, lasync__listener *l) {
  lasync__dlist *head = &f->listeners;
  l->link.next = head;
  l->link.prev = head->prev;
  head->prev->next = &l->link;
  head->prev = &l->link;
}

void lasync__unlink(lasync__listener *l) {
  if (l->link.next == NULL) return;
  l->link.prev->next = l->link.next;
  l->link.next->prev = l->link.prev;
  l->link.next = l->link.prev = NULL;
}

static void fire_listeners(lasync__runtime *rt, lasync__fut *f) {
  while (f->listeners.next != &f->listeners) {
    lasync__listener *l = (lasync__listener *)f->listeners.next;
    lasync__unlink(l);
    if (l->index < 0)
      lasync__wake(rt, lasync__container_of(l, lasync__task, w.wait));
    else
      lasync__waitset_fire(rt, l, f);
  }
}

/* {====== helpers ======} */

lasync__fut *lasync__tofut(lua_State *L, lasync__runtime *rt, int idx) {
  const void *mt;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  if (mt != rt->mt[LASYNC_CLS_TASK] && mt != rt->mt[LASYNC_CLS_FUTURE]) return NULL;
  return (lasync__fut *)lua_touserdata(L, idx);
}

lasync__task *lasync__totask(lua_State *L, lasync__runtime *rt, int idx) {
  return (lasync__task *)lasync__toclass(L, rt, idx, LASYNC_CLS_TASK);
}

lasync__fut *lasync__checkfut(lua_State *L, lasync__runtime *rt, int idx) {
  lasync__fut *f = lasync__tofut(L, rt, idx);
  if (f == NULL) luaL_typeerror(L, idx, "Task or Future");
  return f;
}

static lasync__task *checktask(lua_State *L, int idx) {
  lasync__task *t = lasync__totask(L, lasync__rt(L), idx);
  if (t == NULL) luaL_typeerror(L, idx, LASYNC_TASK_MT);
  return t;
}

void lasync__push_task(lua_State *L, lasync__runtime *rt, lasync__task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->live_ref);
  lua_rawgeti(L, -1, t->slot);
  lua_remove(L, -2);
}

int lasync__push_extra(lua_State *L, int idx, int create) {
  int type;
  idx = lua_absindex(L, idx);
  type = lua_getiuservalue(L, idx, LASYNC_UV_EXTRA);
  if (type == LUA_TTABLE) return 1;
  if (!create) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 2);
  if (type != LUA_TNIL) {  /* a task's spawn site moves into the table */
    lua_insert(L, -2);
    lua_setfield(L, -2, "site");
  } else {
    lua_remove(L, -2);
  }
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, LASYNC_UV_EXTRA);
  return 1;
}

#define push_extra lasync__push_extra

/* Pushes extra[field] of the userdata at idx (nil if absent). */
static int get_extra(lua_State *L, int idx, const char *field) {
  int type;
  push_extra(L, idx, 0);
  type = lua_type(L, -1) == LUA_TTABLE ? lua_getfield(L, -1, field) : LUA_TNIL;
  if (type == LUA_TNIL) lua_pushnil(L);
  lua_remove(L, -2);
  return type;
}

static void push_name(lua_State *L, int idx) {
  lasync__task *t = (lasync__task *)lua_touserdata(L, idx);
  if (get_extra(L, idx, "name") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushfstring(L, "task-%d", (int)t->id);
  }
}

/* Pushes "file:line" of where the task at idx was spawned, or "?". */
static void push_site(lua_State *L, int idx) {
  lasync__task *t = (lasync__task *)lua_touserdata(L, idx);
  lua_Debug ar;
  if (lua_getiuservalue(L, idx, LASYNC_UV_SITE) == LUA_TTABLE) {
    lua_getfield(L, -1, "site");
    lua_remove(L, -2);
  }
  if (lua_type(L, -1) == LUA_TFUNCTION && lua_getinfo(L, ">S", &ar)) {
    if (t->site_line > 0)
      lua_pushfstring(L, "%s:%d", ar.short_src, t->site_line);
    else
      lua_pushstring(L, ar.short_src);
  } else {
    lua_pop(L, 1);
    lua_pushliteral(L, "?");
  }
}

void lasync__store_results(lua_State *L, int idx, int first) {
  lasync__fut *f = (lasync__fut *)lua_touserdata(L, idx);
  int n = lua_gettop(L) - first + 1, i;
  f->nres = n;
  if (n == 1) {
    lua_setiuservalue(L, idx, LASYNC_UV_RESULT);
  } else if (n > 1) {
    lua_createtable(L, n, 1);
    for (i = 0; i < n; i++) {
      lua_pushvalue(L, first + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_setiuservalue(L, idx, LASYNC_UV_RESULT);
    lua_settop(L, first - 1);
  }
}

static void report_unretrieved(lua_State *L, lasync__fut *f, int idx) {
  if (f->state != LASYNC_ERROR || f->retrieved) return;
  if (f->kind == LASYNC_KIND_TASK) {
    lasync__task *t = (lasync__task *)f;
    if (t->reported) return;
    t->reported = 1;
    push_name(L, idx);
    if (get_extra(L, idx, "traceback") != LUA_TSTRING) {
      lua_pop(L, 1);
      lua_getiuservalue(L, idx, LASYNC_UV_RESULT);
      luaL_tolstring(L, -1, NULL);
      lua_remove(L, -2);
    }
    lua_pushfstring(L, "lasync: task '%s' failed and nobody awaited it: %s\n",
                    lua_tostring(L, -2), lua_tostring(L, -1));
  } else {
    f->retrieved = 1;
    lua_getiuservalue(L, idx, LASYNC_UV_RESULT);
    luaL_tolstring(L, -1, NULL);
    lua_pushfstring(L, "lasync: a Future's error was never retrieved: %s\n", lua_tostring(L, -1));
  }
  lua_warning(L, lua_tostring(L, -1), 0);
  lua_pop(L, 3);
}

/* {====== finishing ======} */

static int call_callback(lua_State *L) {
  lua_call(L, 1, 0);
  return 0;
}

void lasync__fut_finish(lua_State *L, lasync__runtime *rt, int idx) {
  lasync__fut *f = (lasync__fut *)lua_touserdata(L, idx);
  lua_Integer i, n;
  idx = lua_absindex(L, idx);
  fire_listeners(rt, f);
  if (!f->has_callbacks) return;
  f->has_callbacks = 0;
  get_extra(L, idx, "callbacks");
  push_extra(L, idx, 0);
  lua_pushnil(L);
  lua_setfield(L, -2, "callbacks");
  lua_pop(L, 1);
  n = luaL_len(L, -1);
  for (i = 1; i <= n; i++) {
    lua_pushcfunction(L, call_callback);
    lua_rawgeti(L, -2, i);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {  /* report it; the other callbacks still run */
      lua_pushfstring(L, "lasync: an on_done callback failed: %s",
                      luaL_tolstring(L, -1, NULL));
      lua_warning(L, lua_tostring(L, -1), 0);
      lua_pop(L, 3);
    }
  }
  lua_pop(L, 1);
}

void lasync__task_done(lua_State *L, lasync__runtime *rt, lasync__task *t) {
  int idx;
  lasync__timer_stop(rt, &t->timer);
  if (t->op_kind == LASYNC_OP_AWAIT) lasync__unlink(&t->w.wait);
  t->op_kind = LASYNC_OP_NONE;
  lasync__push_task(L, rt, t);
  idx = lua_gettop(L);
  lasync__scopes_release(L, t);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->live_ref);
  lua_pushnil(L);
  lua_rawseti(L, -2, t->slot);
  lua_pop(L, 1);
  if (t->served) {  /* killed at shutdown after unpark gave it a value: drop that value */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->parked_ref);
    lua_pushnil(L);
    lua_rawseti(L, -2, t->slot);
    lua_pop(L, 1);
  }
  if (rt->ctx_used) lasync__context_clear(L, rt, t->slot);
  rt->free_slots[rt->nfree++] = t->slot;  /* capacity reserved at spawn */
  t->slot = 0;
  rt->ntasks--;
  if (t->fut.state == LASYNC_ERROR) {  /* reported at the end of run unless retrieved */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->failed_ref);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lasync__fut_finish(L, rt, idx);
  lua_settop(L, idx - 1);
}

/* {====== spawning ======} */

static int alloc_slot(lua_State *L, lasync__runtime *rt) {
  if (rt->nfree > 0) return rt->free_slots[--rt->nfree];
  if (rt->nslots >= rt->capfree) {
    int cap = rt->capfree ? rt->capfree * 2 : 256;
    int *p = realloc(rt->free_slots, (size_t)cap * sizeof *p);
    if (p == NULL) luaL_error(L, "not enough memory");
    rt->free_slots = p;
    rt->capfree = cap;
  }
  return ++rt->nslots;
}

static int is_callable(lua_State *L, int idx) {
  int yes;
  if (lua_isfunction(L, idx)) return 1;
  yes = luaL_getmetafield(L, idx, "__call") != LUA_TNIL;
  if (yes) lua_pop(L, 1);
  return yes;
}

lasync__task *lasync__spawn(lua_State *L, lasync__runtime *rt, int nargs, int level) {
  int fn = lua_gettop(L) - nargs, i, slot;
  lasync__task *t;
  lua_Debug ar;
  if (!is_callable(L, fn)) luaL_typeerror(L, fn, "function");
  if (nargs > 255) luaL_error(L, "spawn: too many arguments (%d, at most 255)", nargs);
  if (!rt->running && !rt->hosted)
    luaL_error(L, "spawn: no loop is running (spawn tasks inside async.run, or in a script run "
               "by the lasync interpreter)");
  luaL_checkstack(L, 4, NULL);
  slot = alloc_slot(L, rt);
  t = (lasync__task *)lua_newuserdatauv(L, sizeof *t, LASYNC_UV_ARGS - 1 + nargs);
  memset(t, 0, sizeof *t);
  lasync__fut_init(&t->fut, LASYNC_KIND_TASK);
  t->id = ++rt->task_ids;
  t->nargs = (unsigned char)nargs;
  t->site_line = -1;
  t->slot = slot;
  lasync__setclass(L, rt, LASYNC_CLS_TASK);
  if (level > 0 && lua_getstack(L, level, &ar) && lua_getinfo(L, "fl", &ar)) {
    t->site_line = ar.currentline;
    lua_setiuservalue(L, -2, LASYNC_UV_SITE);
  }
  lua_pushvalue(L, fn);
  lua_setiuservalue(L, -2, LASYNC_UV_FN);
  for (i = 1; i <= nargs; i++) {
    lua_pushvalue(L, fn + i);
    lua_setiuservalue(L, -2, LASYNC_UV_ARGS + i - 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->live_ref);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  if (rt->ctx_used) lasync__context_inherit(L, rt, slot);  /* shared, not copied */
  rt->ntasks++;
  if (rt->shutting_down) t->cancel_requested = 1;
  lasync__enqueue(rt, t);
  lua_replace(L, fn);
  lua_settop(L, fn);
  return t;
}

int lasync__task_cancel(lasync__runtime *rt, lua_State *L, lasync__task *t) {
  (void)L;
  if (t->fut.state != LASYNC_PENDING) return 0;
  t->cancel_requested = 1;
  lasync__interrupt(rt, t);
  return 1;
}

/* {====== Lua API: outcomes ======} */

/* Pushes the outcome of the future at idx, or raises its error. */
static int push_outcome(lua_State *L, lasync__runtime *rt, int idx) {
  lasync__fut *f = (lasync__fut *)lua_touserdata(L, idx);
  f->retrieved = 1;
  if (f->state == LASYNC_OK) {
    int i;
    if (f->nres == 0) return 0;
    lua_getiuservalue(L, idx, LASYNC_UV_RESULT);
    if (f->nres == 1) return 1;
    luaL_checkstack(L, f->nres, "too many results");
    for (i = 1; i <= f->nres; i++) lua_rawgeti(L, -i, i);
    return f->nres;
  }
  if (f->kind == LASYNC_KIND_TASK && f->state == LASYNC_ERROR && rt->current) {
    /* remember where the error came from, for the traceback of the current task */
    lua_pushvalue(L, idx);
    lasync__push_task(L, rt, rt->current);
    push_extra(L, -1, 1);
    lua_rotate(L, -3, -1);
    lua_setfield(L, -2, "cause");
    lua_pop(L, 2);
  }
  lua_getiuservalue(L, idx, LASYNC_UV_RESULT);
  return lua_error(L);
}

static int fut_await_k(lua_State *L, int status, lua_KContext ctx) {
  lasync__runtime *rt = lasync__rt(L);
  (void)status; (void)ctx;
  lasync__check_cancel(L, rt, rt->current);
  return push_outcome(L, rt, 1);
}

static int fut_await(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__fut *f = lasync__checkfut(L, lasync__rt(L), 1);
  lasync__task *t = lasync__check_suspend(L, rt, "await");
  lasync__check_cancel(L, rt, t);
  if (f == &t->fut) luaL_error(L, "await: a task cannot await itself");
  lua_settop(L, 1);
  if (f->state != LASYNC_PENDING) return push_outcome(L, rt, 1);
  t->w.wait.index = -1;
  lasync__link(f, &t->w.wait);
  return lasync__suspend(L, rt, t, LASYNC_OP_AWAIT, 0, fut_await_k);
}

static int fut_done(lua_State *L) {
  lua_pushboolean(L, lasync__checkfut(L, lasync__rt(L), 1)->state != LASYNC_PENDING);
  return 1;
}

static int fut_cancelled(lua_State *L) {
  lua_pushboolean(L, lasync__checkfut(L, lasync__rt(L), 1)->state == LASYNC_CANCELLED);
  return 1;
}

static int fut_result(lua_State *L) {
  lasync__fut *f = lasync__checkfut(L, lasync__rt(L), 1);
  lua_settop(L, 1);
  if (f->state == LASYNC_PENDING) {
    lasync__push_error(L, "invalid", "result(): the %s has not finished yet",
                       f->kind == LASYNC_KIND_TASK ? "task" : "future");
    return lua_error(L);
  }
  return push_outcome(L, lasync__rt(L), 1);
}

static int fut_error(lua_State *L) {
  lasync__fut *f = lasync__checkfut(L, lasync__rt(L), 1);
  if (f->state != LASYNC_ERROR && f->state != LASYNC_CANCELLED) {
    lua_pushnil(L);
    return 1;
  }
  f->retrieved = 1;
  lua_getiuservalue(L, 1, LASYNC_UV_RESULT);
  return 1;
}

static int fut_on_done(lua_State *L) {
  lasync__fut *f = lasync__checkfut(L, lasync__rt(L), 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (f->state != LASYNC_PENDING) {  /* already done: call it now */
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
    return 0;
  }
  push_extra(L, 1, 1);
  if (lua_getfield(L, -1, "callbacks") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "callbacks");
  }
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, luaL_len(L, -2) + 1);
  f->has_callbacks = 1;
  return 0;
}

/* {====== Lua API: tasks ======} */

static int task_cancel(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = checktask(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checkstring(L, 2);
    if (t->fut.state == LASYNC_PENDING && !t->cancel_requested) {
      push_extra(L, 1, 1);
      lua_pushvalue(L, 2);
      lua_setfield(L, -2, "cancel_msg");
    }
  }
  lua_pushboolean(L, lasync__task_cancel(rt, L, t));
  return 1;
}

static int task_name(lua_State *L) {
  checktask(L, 1);
  push_name(L, 1);
  return 1;
}

static int task_set_name(lua_State *L) {
  checktask(L, 1);
  luaL_checkstring(L, 2);
  push_extra(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "name");
  return 0;
}

static int task_traceback(lua_State *L) {
  checktask(L, 1);
  get_extra(L, 1, "traceback");
  return 1;
}

static int task_describe(lua_State *L) {
  checktask(L, 1);
  push_name(L, 1);
  push_site(L, 1);
  lua_pushfstring(L, "task '%s' (spawned at %s)", lua_tostring(L, -2), lua_tostring(L, -1));
  return 1;
}

/* t:_info() -> state, op, coroutine|nil, spawn site: for async.dump */
static int task_info(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = checktask(L, 1);
  static const char *const ops[] = {NULL, "yield", "sleep", "await", "wait", "io", "wait"};
  const char *state;
  if (t->fut.state != LASYNC_PENDING)
    state = t->fut.state == LASYNC_OK ? "done" : t->fut.state == LASYNC_ERROR ? "failed"
                                                                           : "cancelled";
  else if (rt->current == t)
    state = "running";
  else if (t->co == NULL)
    state = "new";
  else if (t->op_kind == LASYNC_OP_NONE || t->op_kind == LASYNC_OP_YIELD)
    state = "ready";
  else
    state = "waiting";
  lua_pushstring(L, state);
  if (ops[t->op_kind]) lua_pushstring(L, ops[t->op_kind]); else lua_pushnil(L);
  if (t->co)
    lua_getiuservalue(L, 1, LASYNC_UV_CO);
  else
    lua_pushnil(L);
  push_site(L, 1);
  return 4;
}

static int task__tostring(lua_State *L) {
  lasync__task *t = checktask(L, 1);
  static const char *const states[] = {"pending", "done", "failed", "cancelled"};
  push_name(L, 1);
  lua_pushfstring(L, "lasync.task: '%s' (%s)", lua_tostring(L, -1), states[t->fut.state]);
  return 1;
}

static int task__gc(lua_State *L) {
  lasync__task *t = (lasync__task *)lua_touserdata(L, 1);
  /* a live task is only collected by lua_close: its heap and list links are not touched (the
  ** runtime, finalized last, frees the heap without reading it) */
  if (t->fut.state != LASYNC_PENDING) report_unretrieved(L, &t->fut, 1);
  free(t->scopes);
  t->scopes = NULL;
  return 0;
}

static int core_spawn(lua_State *L) {
  lasync__spawn(L, lasync__rt(L), lua_gettop(L) - 1, 1);
  return 1;
}

/* spawn_from(level, fn, ...): for the Lua layer, which spawns on behalf of its caller */
static int core_spawn_from(lua_State *L) {
  int level = (int)luaL_checkinteger(L, 1);
  lua_remove(L, 1);
  lasync__spawn(L, lasync__rt(L), lua_gettop(L) - 1, level);
  return 1;
}

static int core_current_task(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  if (rt->current == NULL)
    lua_pushnil(L);
  else
    lasync__push_task(L, rt, rt->current);
  return 1;
}

/* core.cancelling() -> whether the running task is being cancelled now (its own cancellation
** or an expired/cancelled scope around this point), i.e. whether its next await would raise */
static int core_cancelling(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = rt->current;
  lua_pushboolean(L, t && (t->cancel_requested || t->nscopes) &&
                     lasync__cancel_origin(t, lasync__now()) != NULL);
  return 1;
}

/* core.current_id() -> the running task's number (unique in this runtime), or nil: a cheap
** identity for lock ownership */
static int core_current_id(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  if (rt->current == NULL)
    lua_pushnil(L);
  else
    lua_pushinteger(L, (lua_Integer)rt->current->id);
  return 1;
}

/* {====== parking: the waiting primitive of lasync.sync ======} */

/* Pushes the value core.unpark gave the task (and forgets it). */
static void push_parked_value(lua_State *L, lasync__runtime *rt, lasync__task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->parked_ref);
  lua_rawgeti(L, -1, t->slot);
  lua_pushnil(L);
  lua_rawseti(L, -3, t->slot);
  lua_remove(L, -2);
}

static int park_k(lua_State *L, int status, lua_KContext ctx) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = rt->current;
  int served = t->served;
  lasync__scope *origin;
  (void)status; (void)ctx;
  t->served = 0;
  origin = (t->cancel_requested || t->nscopes) ? lasync__cancel_origin(t, lasync__now()) : NULL;
  if (origin == NULL) {  /* woken by core.unpark */
    lua_pushboolean(L, 1);
    push_parked_value(L, rt, t);
    return 2;
  }
  lua_pushboolean(L, 0);
  lasync__push_cancelled(L, rt, t, origin);
  lua_pushboolean(L, served);
  if (served) push_parked_value(L, rt, t); else lua_pushnil(L);
  return 4;
}

/* Parks the running task t with token (the stack is empty). */
static int park_here(lua_State *L, lasync__runtime *rt, lasync__task *t, lua_Integer token) {
  if ((t->cancel_requested || t->nscopes) && lasync__cancel_origin(t, lasync__now()) != NULL)
    return park_k(L, LUA_OK, 0);  /* already cancelled: answer at once */
  t->w.token = token;
  t->served = 0;
  return lasync__suspend(L, rt, t, LASYNC_OP_PARK, 0, park_k);
}

/* core.park(token) -> true, value | false, err, served, value
** Suspends the running task until core.unpark(task, token, value). Never raises a cancellation:
** it returns it, with served = true when unpark had already given the task a value (which the
** caller must then pass on). */
static int core_park(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lua_Integer token = luaL_checkinteger(L, 1);
  lasync__task *t = lasync__check_suspend(L, rt, "wait");
  lua_settop(L, 0);
  return park_here(L, rt, t, token);
}

/* core.park_in(q [, what]) -> like core.park, after appending the running task and a fresh
** token (> 0) to the waiter list q ({first =, last =, task, token, ...}). `what` names the
** caller in the error raised outside a task. */
static int core_park_in(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = lasync__check_suspend(L, rt, luaL_optstring(L, 2, "wait"));
  lua_Integer last, token = ++rt->park_tokens;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "last");
  last = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lasync__push_task(L, rt, t);
  lua_rawseti(L, 1, last + 1);
  lua_pushinteger(L, token);
  lua_rawseti(L, 1, last + 2);
  lua_pushinteger(L, last + 2);
  lua_setfield(L, 1, "last");
  lua_settop(L, 0);
  return park_here(L, rt, t, token);
}

/* core.unpark(task, token, value) -> true if the task was parked with that token (it now has
** the value and is ready), false if it no longer waits there. */
static int core_unpark(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = checktask(L, 1);
  lua_Integer token = luaL_checkinteger(L, 2);
  if (t->op_kind != LASYNC_OP_PARK || t->w.token != token) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 3);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->parked_ref);
  lua_insert(L, 3);
  lua_rawseti(L, 3, t->slot);
  t->served = 1;
  lasync__wake(rt, t);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.is_parked(task, token) -> whether the task still waits in core.park(token) */
static int core_is_parked(lua_State *L) {
  lasync__task *t = checktask(L, 1);
  lua_Integer token = luaL_checkinteger(L, 2);
  lua_pushboolean(L, t->op_kind == LASYNC_OP_PARK && t->w.token == token);
  return 1;
}

static int core_tasks(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  int i, n = 0;
  lua_createtable(L, rt->ntasks, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->live_ref);
  for (i = 1; i <= rt->nslots; i++) {
    if (lua_rawgeti(L, -1, i) == LUA_TNIL)
      lua_pop(L, 1);
    else
      lua_rawseti(L, -3, ++n);
  }
  lua_pop(L, 1);
  return 1;
}

/* {====== Lua API: futures ======} */

static lasync__fut *check_pending_future(lua_State *L, const char *what) {
  lasync__fut *f = (lasync__fut *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_FUTURE);
  if (f->state != LASYNC_PENDING) {
    lasync__push_error(L, "invalid", "%s: the future is already done", what);
    lua_error(L);
  }
  return f;
}

static int future_set_result(lua_State *L) {
  lasync__fut *f = check_pending_future(L, "set_result");
  lasync__store_results(L, 1, 2);
  f->state = LASYNC_OK;
  lasync__fut_finish(L, lasync__rt(L), 1);
  return 0;
}

static int future_set_error(lua_State *L) {
  lasync__fut *f = check_pending_future(L, "set_error");
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, LASYNC_UV_RESULT);
  f->state = lasync__is_error_kind(L, 2, "cancelled") ? LASYNC_CANCELLED : LASYNC_ERROR;
  lasync__fut_finish(L, lasync__rt(L), 1);
  return 0;
}

static int future_cancel(lua_State *L) {
  lasync__fut *f = (lasync__fut *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_FUTURE);
  const char *msg = luaL_optstring(L, 2, NULL);
  if (f->state != LASYNC_PENDING) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (msg)
    lasync__push_error(L, "cancelled", "the future was cancelled: %s", msg);
  else
    lasync__push_error(L, "cancelled", "the future was cancelled");
  lua_setiuservalue(L, 1, LASYNC_UV_RESULT);
  f->state = LASYNC_CANCELLED;
  lasync__fut_finish(L, lasync__rt(L), 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int future__tostring(lua_State *L) {
  lasync__fut *f = (lasync__fut *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_FUTURE);
  static const char *const states[] = {"pending", "done", "failed", "cancelled"};
  lua_pushfstring(L, "lasync.future: %p (%s)", (void *)f, states[f->state]);
  return 1;
}

static int future__gc(lua_State *L) {
  report_unretrieved(L, (lasync__fut *)lua_touserdata(L, 1), 1);
  return 0;
}

static int core_future(lua_State *L) {
  lasync__fut *f = (lasync__fut *)lua_newuserdatauv(L, sizeof *f, 2);
  lasync__fut_init(f, LASYNC_KIND_FUTURE);
  lasync__setclass(L, lasync__rt(L), LASYNC_CLS_FUTURE);
  return 1;
}

void lasync__open_task(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg task_methods[] = {
    {"await", fut_await}, {"cancel", task_cancel}, {"done", fut_done},
    {"cancelled", fut_cancelled}, {"result", fut_result}, {"error", fut_error},
    {"name", task_name}, {"set_name", task_set_name}, {"on_done", fut_on_done},
    {"traceback", task_traceback}, {"_describe", task_describe}, {"_info", task_info},
    {NULL, NULL}
  };
  static const luaL_Reg task_meta[] = {
    {"__tostring", task__tostring}, {"__gc", task__gc}, {NULL, NULL}
  };
  static const luaL_Reg future_methods[] = {
    {"set_result", future_set_result}, {"set_error", future_set_error},
    {"cancel", future_cancel}, {"await", fut_await}, {"done", fut_done},
    {"cancelled", fut_cancelled}, {"result", fut_result}, {"error", fut_error},
    {"on_done", fut_on_done}, {NULL, NULL}
  };
  static const luaL_Reg future_meta[] = {
    {"__tostring", future__tostring}, {"__gc", future__gc}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"spawn", core_spawn}, {"spawn_from", core_spawn_from}, {"await", fut_await},
    {"current_task", core_current_task}, {"current_id", core_current_id}, {"tasks", core_tasks},
    {"cancelling", core_cancelling},
    {"park", core_park}, {"park_in", core_park_in}, {"unpark", core_unpark},
    {"is_parked", core_is_parked},
    {"Future", core_future},
    {NULL, NULL}
  };
  /* stack: module table */
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_TASK, LASYNC_TASK_MT, task_methods, task_meta);
  lasync__newclass(L, rt, LASYNC_CLS_FUTURE, LASYNC_FUTURE_MT, future_methods, future_meta);
  luaL_setfuncs(L, funcs, 1);
}
