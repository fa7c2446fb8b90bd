/*
** context.c: task-local context, the core of async.ContextVar (lua/lasync/context.lua).
**
** A context is a Lua table var -> value that is never changed once it is in use: setting a
** variable makes a new table (the Lua layer copies the old one), so a spawned task can simply
** share its spawner's table, and keep it, whatever either does next. Contexts are kept by task
** slot in one registry table (slot 0: the context outside any task, which the main task of
** async.run starts with), created when a context is first set: until then spawning pays one
** test of a flag.
*/
#include "internal.h"

#define ROOT 0                 /* the slot of the context outside tasks */

static int slot_of(lasync__runtime *rt) {
  return rt->current ? rt->current->slot : ROOT;
}

/* Creates the table of contexts by slot when a context is first set. [-0, +0, m] */
static void ensure_contexts(lua_State *L, lasync__runtime *rt) {
  if (!rt->ctx_used) {
    lua_newtable(L);
    rt->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    rt->ctx_used = 1;
  }
}

void lasync__context_inherit(lua_State *L, lasync__runtime *rt, int slot) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ctx_ref);
  if (lua_rawgeti(L, -1, slot_of(rt)) != LUA_TNIL)
    lua_rawseti(L, -2, slot);
  else
    lua_pop(L, 1);
  lua_pop(L, 1);
}

void lasync__context_clear(lua_State *L, lasync__runtime *rt, int slot) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ctx_ref);
  lua_pushnil(L);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
}

/* core.context() -> the context of the running task (or outside tasks), or nil if empty */
static int core_context(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  if (!rt->ctx_used) {
    lua_pushnil(L);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ctx_ref);
  lua_rawgeti(L, -1, slot_of(rt));
  return 1;
}

/* core.set_context(t): t (a table the caller will not change any more, or nil) becomes the
** context of the running task (or the one outside tasks) */
static int core_set_context(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  ensure_contexts(L, rt);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ctx_ref);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, slot_of(rt));
  return 0;
}

/* core.context_enter(key, value) -> prev, new: the current context becomes new, a copy of it
** with key = value (value must not be nil); prev is the one before (nil if empty). For
** ContextVar:_enter, which lasync.flow calls around every call: one C call, no Lua loop. */
static int core_context_enter(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  int slot = slot_of(rt);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  ensure_contexts(L, rt);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ctx_ref);  /* 3: the slot table */
  lua_rawgeti(L, 3, slot);                         /* 4: prev */
  lua_createtable(L, 0, 4);                        /* 5: new */
  if (lua_istable(L, 4)) {
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, 5);
    }
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, 5);
  lua_pushvalue(L, 5);
  lua_rawseti(L, 3, slot);
  return 2;  /* prev, new */
}

/* core.context_leave(prev, ctx) -> true if the current context was ctx (then prev is the
** current one again), false (nothing changed) if something else was set meanwhile */
static int core_context_leave(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  int slot = slot_of(rt), same;
  if (!rt->ctx_used) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ctx_ref);  /* 3 */
  lua_rawgeti(L, 3, slot);
  same = lua_rawequal(L, -1, 2);
  if (same) {
    lua_pushvalue(L, 1);
    lua_rawseti(L, 3, slot);
  }
  lua_pushboolean(L, same);
  return 1;
}

void lasync__open_context(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg funcs[] = {
    {"context", core_context}, {"set_context", core_set_context},
    {"context_enter", core_context_enter}, {"context_leave", core_context_leave}, {NULL, NULL}
  };
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
}
