/*
** waitset.c: waiting on many futures at once, the primitive under gather, wait, race and
** as_completed. A waitset listens to every child, records completions in order, and wakes its
** waiter when the condition it waits for holds. It never raises a child's error and cancels
** nothing: ownership is the Lua layer's business.
*/
#include <string.h>
#include "internal.h"

enum { WAIT_NEXT, WAIT_ALL, WAIT_FIRST_ERROR, WAIT_FIRST_FAILURE };

typedef struct waitset waitset;

struct waitset {
  lasync__task *waiter;
  int mode;
  int n, remaining;
  int first_error, first_failure;   /* 1-based indices, 0 = none */
  int qhead, qtail;                 /* completion queue */
  int *queue;
  lasync__listener nodes[1];   /* node i listens to child i + 1 */
};

#define ws_of(l) lasync__container_of((l) - (l)->index, waitset, nodes[0])

static int satisfied(waitset *ws) {
  switch (ws->mode) {
    case WAIT_NEXT: return ws->qhead < ws->qtail;
    case WAIT_ALL: return ws->remaining == 0;
    case WAIT_FIRST_ERROR: return ws->remaining == 0 || ws->first_error;
    default: return ws->remaining == 0 || ws->first_failure;
  }
}

static void completed(waitset *ws, int index, lasync__fut *f) {
  ws->queue[ws->qtail++] = index;
  ws->remaining--;
  if (f->state == LASYNC_ERROR && !ws->first_error) ws->first_error = index;
  if (f->state != LASYNC_OK && !ws->first_failure) ws->first_failure = index;
}

void lasync__waitset_fire(lasync__runtime *rt, lasync__listener *l, lasync__fut *f) {
  waitset *ws = ws_of(l);
  completed(ws, l->index + 1, f);
  if (ws->waiter && satisfied(ws)) {
    lasync__task *t = ws->waiter;
    ws->waiter = NULL;
    lasync__wake(rt, t);
  }
}

void lasync__waitset_abort(lasync__task *t) {
  ((waitset *)t->w.op)->waiter = NULL;
}

static void unlink_all(waitset *ws) {
  int i;
  for (i = 0; i < ws->n; i++) lasync__unlink(&ws->nodes[i]);
}

/* {====== Lua API ======} */

/* core.waitset(list) -> ws */
static int core_waitset(lua_State *L) {
  lua_Integer n, i;
  size_t size;
  waitset *ws;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n < (1 << 24), 1, "too many futures");
  for (i = 1; i <= n; i++) {  /* check everything before allocating */
    lua_rawgeti(L, 1, i);
    if (lasync__tofut(L, lasync__rt(L), -1) == NULL)
      luaL_error(L, "item %d is a %s, not a Task or Future", (int)i, luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  size = sizeof(waitset) + (size_t)(n > 0 ? n - 1 : 0) * sizeof(lasync__listener) +
         (size_t)n * sizeof(int);
  ws = (waitset *)lua_newuserdatauv(L, size, 1);
  memset(ws, 0, size);
  ws->n = ws->remaining = (int)n;
  ws->queue = (int *)(void *)&ws->nodes[n > 0 ? n : 1];
  lasync__setclass(L, lasync__rt(L), LASYNC_CLS_WAITSET);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);  /* anchors the children */
  for (i = 1; i <= n; i++) {
    lasync__listener *nd = &ws->nodes[i - 1];
    lasync__fut *f;
    lua_rawgeti(L, 1, i);
    f = (lasync__fut *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    nd->index = (int)i - 1;
    if (f->state != LASYNC_PENDING)
      completed(ws, (int)i, f);
    else
      lasync__link(f, nd);
  }
  return 1;
}

static waitset *checkws(lua_State *L) {
  return (waitset *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_WAITSET);
}

static int push_answer(lua_State *L, waitset *ws) {
  int index;
  switch (ws->mode) {
    case WAIT_NEXT:
      if (ws->qhead == ws->qtail) return 0;
      lua_pushinteger(L, ws->queue[ws->qhead++]);
      return 1;
    case WAIT_ALL: return 0;
    case WAIT_FIRST_ERROR: index = ws->first_error; break;
    default: index = ws->first_failure; break;
  }
  if (index == 0) return 0;
  lua_pushinteger(L, index);
  return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  lasync__runtime *rt = lasync__rt(L);
  waitset *ws = (waitset *)ctx;
  (void)status;
  ws->waiter = NULL;
  lasync__check_cancel(L, rt, rt->current);
  return push_answer(L, ws);
}

static int wait_for(lua_State *L, waitset *ws, int mode) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = lasync__check_suspend(L, rt, "wait");
  lasync__check_cancel(L, rt, t);
  if (ws->waiter) luaL_error(L, "wait: another task is already waiting on this waitset");
  ws->mode = mode;
  lua_settop(L, 1);
  if (satisfied(ws) || (mode == WAIT_NEXT && ws->qhead == ws->n)) return push_answer(L, ws);
  ws->waiter = t;
  t->w.op = ws;
  return lasync__suspend(L, rt, t, LASYNC_OP_WAITSET, (lua_KContext)ws, wait_k);
}

/* ws:wait("all" | "first_error" | "first_failure") -> index of the first failed child or nil */
static int ws_wait(lua_State *L) {
  static const char *const modes[] = {"next", "all", "first_error", "first_failure", NULL};
  waitset *ws = checkws(L);
  int mode = luaL_checkoption(L, 2, "all", modes);
  return wait_for(L, ws, mode);
}

/* ws:next() -> index of the next child to finish (in completion order), nil once all reported */
static int ws_next(lua_State *L) {
  return wait_for(L, checkws(L), WAIT_NEXT);
}

/* ws:results([with_errors]) -> {n = #children, first result of each child}. With with_errors, a
** child that failed or was cancelled has its error value in its slot. Marks every child's
** outcome as retrieved. */
static int ws_results(lua_State *L) {
  waitset *ws = checkws(L);
  int with_errors = lua_toboolean(L, 2), i;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);  /* the children */
  lua_createtable(L, ws->n, 1);
  for (i = 0; i < ws->n; i++) {
    lasync__fut *f;
    lua_rawgeti(L, 2, i + 1);
    f = (lasync__fut *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (f->state == LASYNC_PENDING) continue;
    if (f->state != LASYNC_OK && !with_errors) continue;
    f->retrieved = 1;
    if (f->state == LASYNC_OK && f->nres == 0) continue;
    lua_rawgeti(L, 2, i + 1);
    lua_getiuservalue(L, -1, LASYNC_UV_RESULT);
    if (f->state == LASYNC_OK && f->nres > 1) {
      lua_rawgeti(L, -1, 1);
      lua_remove(L, -2);
    }
    lua_rawseti(L, 3, i + 1);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, ws->n);
  lua_setfield(L, 3, "n");
  return 1;
}

static int ws_remaining(lua_State *L) {
  lua_pushinteger(L, checkws(L)->remaining);
  return 1;
}

static int ws_close(lua_State *L) {
  unlink_all(checkws(L));
  return 0;
}

static int ws__gc(lua_State *L) {
  unlink_all((waitset *)lua_touserdata(L, 1));
  return 0;
}

void lasync__open_waitset(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg methods[] = {
    {"wait", ws_wait}, {"next", ws_next}, {"remaining", ws_remaining}, {"close", ws_close},
    {"results", ws_results},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {{"__gc", ws__gc}, {"__close", ws_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"waitset", core_waitset}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_WAITSET, LASYNC_WAITSET_MT, methods, meta);
  luaL_setfuncs(L, funcs, 1);
}
