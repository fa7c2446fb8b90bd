/*
** scope.c: cancel scopes. Each task has a stack of scopes; a scope has an optional deadline, can
** be cancelled, and can shield what it encloses from cancellation outside it. Timeouts,
** deadlines, shielded() and TaskGroup blocks are scopes. Cancellation reaches the awaits inside a
** scope only, and stays in force (sticky) until the scope is exited.
*/
#include <math.h>
#include <stdlib.h>
#include "internal.h"

lasync__scope *lasync__cancel_origin(lasync__task *t, double now) {
  lasync__scope *origin = NULL;
  int i;
  for (i = (int)t->nscopes - 1; i >= 0; i--) {
    lasync__scope *s = t->scopes[i];
    if (!s->cancelled && s->deadline <= now) s->cancelled = s->expired = 1;
    if (s->cancelled) origin = s;
    if (s->shield) return origin;
  }
  return t->cancel_requested ? LASYNC_ROOT_SCOPE : origin;
}

double lasync__effective_deadline(lasync__task *t) {
  double d = HUGE_VAL;
  int i;
  for (i = (int)t->nscopes - 1; i >= 0; i--) {
    lasync__scope *s = t->scopes[i];
    if (s->deadline < d) d = s->deadline;
    if (s->shield) break;
  }
  return d;
}

void lasync__scopes_release(lua_State *L, lasync__task *t) {
  while (t->nscopes > 0) {
    lasync__scope *s = t->scopes[--t->nscopes];
    s->task = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
  }
  free(t->scopes);
  t->scopes = NULL;
  t->capscopes = 0;
}

void lasync__push_cancelled(lua_State *L, lasync__runtime *rt, lasync__task *t,
                            lasync__scope *origin) {
  if (origin == LASYNC_ROOT_SCOPE) {
    lasync__push_task(L, rt, t);
    lua_getfield(L, -1, "name");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    lua_getiuservalue(L, -2, LASYNC_UV_EXTRA);
    if (lua_type(L, -1) == LUA_TTABLE)
      lua_getfield(L, -1, "cancel_msg");
    else
      lua_pushnil(L);
    /* stack: task, name, extra, msg */
    if (lua_type(L, -1) == LUA_TSTRING)
      lasync__push_error(L, "cancelled", "task '%s' was cancelled: %s", lua_tostring(L, -3),
                         lua_tostring(L, -1));
    else
      lasync__push_error(L, "cancelled", "task '%s' was cancelled", lua_tostring(L, -3));
    lua_replace(L, -5);
    lua_pop(L, 3);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, origin->ref);  /* the scope */
  if (origin->expired)
    lasync__push_error(L, "cancelled", "cancelled by a deadline that expired (%f s)",
                       origin->duration);
  else if (lua_getiuservalue(L, -1, 1) == LUA_TSTRING) {
    lasync__push_error(L, "cancelled", "%s", lua_tostring(L, -1));
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
    lasync__push_error(L, "cancelled", "cancelled by an enclosing cancel scope");
  }
  lua_insert(L, -2);
  lua_setfield(L, -2, "scope");
}

/* {====== Lua API ======} */

static lasync__scope *checkscope(lua_State *L, int idx) {
  return (lasync__scope *)lasync__checkclass(L, lasync__rt(L), idx, LASYNC_CLS_SCOPE);
}

/* core.scope([deadline [, shield [, duration]]]) -> scope, entered in the running task */
static int core_scope(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  double deadline = luaL_optnumber(L, 1, HUGE_VAL);
  int shield = lua_toboolean(L, 2);
  double duration = luaL_optnumber(L, 3, 0);
  lasync__task *t = rt->current;
  lasync__scope *s;
  if (t == NULL)
    luaL_error(L, "timeouts, deadlines and shields must be used inside a task (inside async.run, "
               "or in a script run by the lasync interpreter)");
  luaL_argcheck(L, deadline == deadline, 1, "deadline is NaN");
  if (t->nscopes == t->capscopes) {
    unsigned short cap = t->capscopes ? (unsigned short)(t->capscopes * 2) : 4;
    lasync__scope **p;
    if (cap <= t->capscopes) luaL_error(L, "too many nested cancel scopes");
    p = realloc(t->scopes, cap * sizeof *p);
    if (p == NULL) luaL_error(L, "not enough memory");
    t->scopes = p;
    t->capscopes = cap;
  }
  s = (lasync__scope *)lua_newuserdatauv(L, sizeof *s, 1);
  s->task = t;
  s->deadline = deadline;
  s->duration = duration;
  s->cancelled = s->expired = 0;
  s->shield = (unsigned char)shield;
  s->ref = LUA_NOREF;
  lasync__setclass(L, rt, LASYNC_CLS_SCOPE);
  lua_pushvalue(L, -1);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* anchored while entered */
  t->scopes[t->nscopes++] = s;
  return 1;
}

/* s:close([err [, quiet]]) and __close: exits the scope (innermost first). Returns true when err
** is the Cancelled error this scope caused; when the scope expired it raises a timeout error
** instead, unless `quiet`. */
static int scope_close(lua_State *L) {
  lasync__scope *s = checkscope(L, 1);
  lasync__task *t = s->task;
  int mine = 0;
  if (t == NULL) {  /* already exited */
    lua_pushboolean(L, 0);
    return 1;
  }
  if (t->scopes[t->nscopes - 1] != s)
    luaL_error(L, "cancel scopes must be exited in the reverse order they were entered");
  if (lua_type(L, 2) == LUA_TTABLE && lasync__is_error_kind(L, 2, "cancelled")) {
    lua_getfield(L, 2, "scope");
    mine = lua_rawequal(L, -1, 1);
    lua_pop(L, 1);
  }
  t->nscopes--;
  s->task = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  s->ref = LUA_NOREF;
  if (mine && s->expired && !lua_toboolean(L, 3)) {
    lasync__push_error(L, "timeout", "timed out after %f s", s->duration);
    lua_pushnumber(L, s->duration);
    lua_setfield(L, -2, "seconds");
    return lua_error(L);
  }
  lua_pushboolean(L, mine);
  return 1;
}

static int scope_cancel(lua_State *L) {
  lasync__scope *s = checkscope(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, 1);
  }
  if (s->cancelled) return 0;
  s->cancelled = 1;
  if (s->task) lasync__interrupt(lasync__rt(L), s->task);
  return 0;
}

static int scope_cancelled(lua_State *L) {
  lua_pushboolean(L, checkscope(L, 1)->cancelled);
  return 1;
}

static int scope_expired(lua_State *L) {
  lasync__scope *s = checkscope(L, 1);
  if (!s->expired && s->task && s->deadline <= lasync__now()) s->cancelled = s->expired = 1;
  lua_pushboolean(L, s->expired);
  return 1;
}

static int scope_deadline(lua_State *L) {
  lasync__scope *s = checkscope(L, 1);
  if (s->deadline == HUGE_VAL) return 0;
  lua_pushnumber(L, s->deadline);
  return 1;
}

void lasync__open_scope(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg methods[] = {
    {"close", scope_close}, {"cancel", scope_cancel}, {"cancelled", scope_cancelled},
    {"expired", scope_expired}, {"deadline", scope_deadline}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {{"__close", scope_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"scope", core_scope}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_SCOPE, LASYNC_SCOPE_MT, methods, meta);
  luaL_setfuncs(L, funcs, 1);
}
