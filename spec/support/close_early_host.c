/*
** close_early_host: a C host that closes its Lua state while a task still waits for a libuv
** request (or after the request completed, before the task resumed), then keeps running its
** own loop, in which the request's callback comes after lua_close. spec/embed_spec.lua runs
** it (built by `make` as build/close-early-host; under `make check-asan`, with ASan).
**
**   close-early-host SCRIPT [STEPS]
** SCRIPT is Lua code run as a task (the Lua layer from the checkout); STEPS more turns of the
** host's loop run before lua_close (default 0: the request is still in flight).
** Prints "loop closed: <uv_loop_close's result>" and exits 0 when the loop could be closed.
*/
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "lasync.h"

int main(int argc, char **argv) {
  uv_loop_t loop;
  lua_State *L;
  int i, steps = argc > 2 ? atoi(argv[2]) : 0, rc;
  if (argc < 2) {
    fprintf(stderr, "usage: close-early-host SCRIPT [STEPS]\n");
    return 2;
  }
  uv_loop_init(&loop);
  L = luaL_newstate();
  luaL_openlibs(L);
  lasync_set_loop(L, &loop);
  luaL_requiref(L, "lasync.core", luaopen_lasync_core, 0);
  lua_pop(L, 1);
  (void)luaL_dostring(L, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path");
  if (luaL_loadstring(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "close-early-host: %s\n", lua_tostring(L, -1));
    return 2;
  }
  lasync_spawn(L, 0);
  lua_pop(L, 1);
  lasync_step(L);  /* the task starts its request and waits */
  for (i = 0; i < steps; i++) {
    uv_run(&loop, UV_RUN_ONCE);  /* the request may complete: the task is ready, not resumed */
    if (i + 1 < steps) lasync_step(L);
  }
  lua_close(L);  /* the host shuts down early */
  uv_run(&loop, UV_RUN_DEFAULT);  /* callbacks of what was in flight come now */
  rc = uv_loop_close(&loop);
  printf("loop closed: %d\n", rc);
  return rc == 0 ? 0 : 1;
}
