/*
** ops.c: external operations (C-level futures for embedding hosts and for lasync's own C
** bindings) and notifiers (wake-ups from signal handlers or other threads).
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

lasync__runtime *lasync__getruntime(lua_State *L) {
  lasync__runtime *rt;
  lua_getfield(L, LUA_REGISTRYINDEX, LASYNC_RUNTIME_KEY);
  rt = (lasync__runtime *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return rt;
}

/* {====== external operations ======} */

int lasync__ops_pending(lasync__runtime *rt) {
  return rt->nexternal > 0;  /* a host completes them, from outside the loop maybe */
}

static void op_cancel_once(lasync_op *op) {
  if (op->finished) return;
  op->finished = 1;
  if (op->cancel) op->cancel(op->data);
}

void lasync__op_abort(lasync__task *t) {
  lasync_op *op = (lasync_op *)t->w.op;
  if (!op->completed) op->rt->nexternal--;
  op->task = NULL;
  op_cancel_once(op);
}

void lasync__op_init(lasync_op *op, lasync__runtime *rt) {
  memset(op, 0, sizeof *op);
  op->rt = rt;
}

LASYNC_API lasync_op *lasync_op_new(lua_State *L) {
  lasync__runtime *rt = lasync__getruntime(L);
  lasync_op *op;
  if (rt == NULL) luaL_error(L, "lasync.core is not open in this Lua state");
  (void)lasync__check_suspend(L, rt, "this operation");
  op = (lasync_op *)lua_newuserdatauv(L, sizeof *op, 0);
  memset(op, 0, sizeof *op);
  op->rt = rt;
  lasync__setclass(L, rt, LASYNC_CLS_OP);
  return op;
}

static int op_k(lua_State *L, int status, lua_KContext ctx) {
  lasync_op *op = (lasync_op *)ctx;
  lasync__runtime *rt = op->rt;
  lasync__task *t = rt->current;
  (void)status;
  op->task = NULL;
  if ((t->cancel_requested || t->nscopes) && lasync__cancel_origin(t, lasync__now()) != NULL) {
    op_cancel_once(op);  /* cancelled before it resumed, maybe after it completed */
    lasync__check_cancel(L, rt, t);
  }
  op->finished = 1;
  return op->deliver(L, op->data, op->status);
}

LASYNC_API int lasync_op_await(lua_State *L, lasync_op *op, void *data,
                               lasync_deliver_fn deliver, lasync_cancel_fn cancel) {
  lasync__runtime *rt = op->rt;
  lasync__task *t = rt->current;
  op->data = data;
  op->deliver = deliver;
  op->cancel = cancel;
  if (op->completed) return op_k(L, LUA_OK, (lua_KContext)op);  /* completed synchronously */
  if ((t->cancel_requested || t->nscopes) && lasync__cancel_origin(t, lasync__now()) != NULL) {
    op_cancel_once(op);
    lasync__check_cancel(L, rt, t);
  }
  op->task = t;
  t->w.op = op;
  rt->nexternal++;
  return lasync__suspend(L, rt, t, LASYNC_OP_EXTERN, (lua_KContext)op, op_k);
}

LASYNC_API void lasync_op_complete(lasync_op *op, int status) {
  if (op->completed || op->finished) return;
  op->completed = 1;
  op->status = status;
  if (op->task) {
    op->rt->nexternal--;
    lasync__wake(op->rt, op->task);
  }
}

/* {====== notifiers ======} */

struct lasync_notifier {
  uv_async_t *async;           /* malloc'd; freed in its close callback */
  lasync__runtime *rt;
  lasync_notifier *next;       /* in rt->notify_head while a notification waits */
  int ref;                     /* anchors the userdata (and its function) while open */
  unsigned char queued, closed;
};

static void on_async(uv_async_t *h) {
  lasync_notifier *n = (lasync_notifier *)h->data;
  if (n == NULL || n->closed || n->queued) return;
  n->queued = 1;
  n->next = n->rt->notify_head;
  n->rt->notify_head = n;
}

static void notifier_close(lasync__runtime *rt, lasync_notifier *n, lua_State *L) {
  lasync_notifier **p;
  if (n->closed) return;
  n->closed = 1;
  for (p = &rt->notify_head; *p; p = &(*p)->next)
    if (*p == n) {
      *p = n->next;
      break;
    }
  n->async->data = NULL;
  uv_close((uv_handle_t *)n->async, lasync__free_handle);
  n->async = NULL;
  if (L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->notifiers_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, n->ref);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, n->ref);
  }
  n->ref = LUA_NOREF;
}

void lasync__notifier_close(lasync_notifier *n, lua_State *L) {
  notifier_close(n->rt, n, L);
}

void lasync__dispatch_notifiers(lua_State *L, lasync__runtime *rt) {
  while (rt->notify_head) {
    lasync_notifier *n = rt->notify_head;
    rt->notify_head = n->next;
    n->queued = 0;
    if (n->closed || (!rt->running && !rt->hosted)) continue;
    lua_rawgeti(L, LUA_REGISTRYINDEX, n->ref);
    lua_getiuservalue(L, -1, 1);
    lasync__spawn(L, rt, 0, 0);
    lua_pop(L, 2);
  }
}

void lasync__close_notifiers(lasync__runtime *rt) {
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->notifiers_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {  /* notifier_close clears the current field: next allows that */
    lasync_notifier *n = (lasync_notifier *)lua_touserdata(L, -2);
    lua_pop(L, 1);
    notifier_close(rt, n, L);
  }
  lua_pop(L, 1);
  rt->notify_head = NULL;
}

LASYNC_API lasync_notifier *lasync_notifier_new(lua_State *L) {
  lasync__runtime *rt = lasync__getruntime(L);
  lasync_notifier *n;
  uv_async_t *h;
  if (rt == NULL) luaL_error(L, "lasync.core is not open in this Lua state");
  luaL_checktype(L, -1, LUA_TFUNCTION);
  n = (lasync_notifier *)lua_newuserdatauv(L, sizeof *n, 1);
  memset(n, 0, sizeof *n);
  n->ref = LUA_NOREF;
  n->closed = 1;  /* until the handle exists */
  lasync__setclass(L, rt, LASYNC_CLS_NOTIFIER);
  h = malloc(sizeof *h);
  if (h == NULL) luaL_error(L, "not enough memory");
  if (uv_async_init(rt->loop, h, on_async) != 0) {
    free(h);
    luaL_error(L, "cannot create a notifier");
  }
  h->data = n;
  n->async = h;
  n->rt = rt;
  n->closed = 0;
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1);  /* the function */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->notifiers_ref);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  n->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return n;
}

LASYNC_API void lasync_notify(lasync_notifier *n) {
  if (n->async) uv_async_send(n->async);
}

LASYNC_API void lasync_notifier_unref(lasync_notifier *n) {
  if (n->async) uv_unref((uv_handle_t *)n->async);
}

/* {====== Lua API ======} */

static lasync_notifier *checknotifier(lua_State *L) {
  return (lasync_notifier *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_NOTIFIER);
}

/* core.notifier(fn) -> notifier with :notify() and :close() */
static int core_notifier(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lasync_notifier_new(L)->ref);
  return 1;
}

static int notifier_notify(lua_State *L) {
  lasync_notify(checknotifier(L));
  return 0;
}

static int notifier_unref(lua_State *L) {
  lasync_notifier_unref(checknotifier(L));
  return 0;
}

static int notifier_lclose(lua_State *L) {
  lasync_notifier *n = checknotifier(L);
  notifier_close(lasync__rt(L), n, L);
  return 0;
}

static int notifier__gc(lua_State *L) {
  lasync_notifier *n = (lasync_notifier *)lua_touserdata(L, 1);
  if (!n->closed) notifier_close(n->rt, n, NULL);
  return 0;
}

static int op__gc(lua_State *L) {
  (void)L;  /* a pending op is only collected by lua_close: nothing may run then */
  return 0;
}

void lasync__open_ops(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg notifier_methods[] = {
    {"notify", notifier_notify}, {"close", notifier_lclose}, {"unref", notifier_unref},
    {NULL, NULL}
  };
  static const luaL_Reg notifier_meta[] = {
    {"__gc", notifier__gc}, {"__close", notifier_lclose}, {NULL, NULL}
  };
  static const luaL_Reg op_meta[] = {{"__gc", op__gc}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"notifier", core_notifier}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_NOTIFIER, LASYNC_NOTIFIER_MT, notifier_methods,
                   notifier_meta);
  lasync__newclass(L, rt, LASYNC_CLS_OP, LASYNC_OP_MT, NULL, op_meta);
  luaL_setfuncs(L, funcs, 1);
}
