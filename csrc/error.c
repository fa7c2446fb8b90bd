/*
** error.c: error objects ({kind=, message=} tables with a readable tostring) and the class
** builder used by every file.
*/
#include <stdarg.h>
#include <string.h>
#include "internal.h"

static int error__tostring(lua_State *L) {
  const char *kind, *msg;
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  kind = lua_tostring(L, -2);
  msg = lua_tostring(L, -1);
  if (kind && msg)
    lua_pushfstring(L, "%s: %s", kind, msg);
  else
    lua_pushfstring(L, "%s: %s", kind ? kind : "error", msg ? msg : "(no message)");
  return 1;
}

void lasync__open_error(lua_State *L) {
  if (luaL_newmetatable(L, LASYNC_ERROR_MT)) {
    lua_pushcfunction(L, error__tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

void lasync__push_error(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, LASYNC_ERROR_MT);
}

int lasync__is_error_kind(lua_State *L, int idx, const char *kind) {
  int yes = 0;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  if (lua_getfield(L, idx, "kind") == LUA_TSTRING)
    yes = strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return yes;
}

static const char *const class_names[LASYNC_NCLASSES] = {
  LASYNC_TASK_MT, LASYNC_FUTURE_MT, LASYNC_SCOPE_MT, LASYNC_WAITSET_MT, LASYNC_NOTIFIER_MT,
  LASYNC_OP_MT, "lasync.http.multi", "lasync.http.request",
  "lasync.fs.File", "lasync.signal",
  "lasync.stream", "lasync.listener", "lasync.process"
};

void lasync__newclass(lua_State *L, lasync__runtime *rt, int cls, const char *name,
                      const luaL_Reg *methods, const luaL_Reg *metamethods) {
  /* stack: rt */
  luaL_newmetatable(L, name);
  if (rt->mt[cls] == NULL) {
    rt->mt[cls] = lua_topointer(L, -1);
    lua_pushvalue(L, -1);
    rt->mtref[cls] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, metamethods, 1);
  if (methods) {
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, methods, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

void lasync__setclass(lua_State *L, lasync__runtime *rt, int cls) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->mtref[cls]);
  lua_setmetatable(L, -2);
}

void *lasync__toclass(lua_State *L, lasync__runtime *rt, int idx, int cls) {
  const void *mt;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return mt == rt->mt[cls] ? lua_touserdata(L, idx) : NULL;
}

void *lasync__checkclass(lua_State *L, lasync__runtime *rt, int idx, int cls) {
  void *p = lasync__toclass(L, rt, idx, cls);
  if (p == NULL) luaL_typeerror(L, idx, class_names[cls]);
  return p;
}
