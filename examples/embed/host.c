/*
** host.c: a C program that embeds Lua with lasync, on its own libuv loop.
**
** The host owns the loop and drives it; lasync runs tasks between the host's events through
** lasync_step(). It exposes one async host function to scripts, host.delay(ms, value), which
** suspends only the calling task until a uv_timer of the host's fires (a C-level future made
** with lasync_op_new / lasync_op_await / lasync_op_complete).
**
** Build: make build/embed-host     Run: build/embed-host [script.lua]
*/
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "lasync.h"

/* {====== host.delay(ms, value) ======} */

typedef struct delay_req {
  uv_timer_t timer;
  lasync_op *op;
  lua_Integer value;
} delay_req;

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_timer(uv_timer_t *h) {  /* the host's callback: runs no Lua */
  delay_req *r = (delay_req *)h->data;
  lasync_op_complete(r->op, 0);
}

static int deliver(lua_State *L, void *data, int status) {  /* runs in the task */
  delay_req *r = (delay_req *)data;
  (void)status;
  lua_pushinteger(L, r->value * 2);
  uv_close((uv_handle_t *)&r->timer, on_closed);
  return 1;
}

static void cancel(void *data) {  /* the task was cancelled: abort and free */
  delay_req *r = (delay_req *)data;
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, on_closed);
}

static int host_delay(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  lua_Integer value = luaL_checkinteger(L, 2);
  delay_req *r;
  lasync_op *op;
  luaL_argcheck(L, ms >= 0, 1, "must be >= 0");
  op = lasync_op_new(L);  /* raises outside a task: before anything is allocated */
  r = (delay_req *)malloc(sizeof *r);
  if (r == NULL) return luaL_error(L, "not enough memory");
  r->value = value;
  r->op = op;
  r->timer.data = r;
  uv_timer_init(lasync_loop(L), &r->timer);
  uv_timer_start(&r->timer, on_timer, (uint64_t)ms, 0);
  /* from here on, exactly one of deliver and cancel frees r (cancel at once if the task is
  ** already cancelled) */
  return lasync_op_await(L, op, r, deliver, cancel);
}

/* {====== the host ======} */

static const char *default_script =
  "local async = require('lasync')\n"
  "local host = require('host')\n"
  "local t0 = async.now()\n"
  "local a = async.spawn(host.delay, 50, 1)\n"
  "local b = async.spawn(host.delay, 30, 2)\n"
  "local slow = async.spawn(host.delay, 10000, 3)\n"
  "print('gathered', async.gather(a, b))\n"
  "slow:cancel()\n"
  "print('slow cancelled', pcall(slow.await, slow))\n"
  "print('timeout', pcall(async.timeout, 0.02, host.delay, 1000, 4))\n"
  "print(('elapsed < 0.5 s: %s'):format(async.now() - t0 < 0.5))\n";

static int luaopen_host(lua_State *L) {
  static const luaL_Reg funcs[] = {{"delay", host_delay}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  lua_State *L;
  int status;
  uv_loop_init(&loop);
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_warning(L, "@on", 0);
  lasync_set_loop(L, &loop);  /* before the module opens: the host drives this loop */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_lasync_core);
  lua_setfield(L, -2, "lasync.core");
  lua_pushcfunction(L, luaopen_host);
  lua_setfield(L, -2, "host");
  lua_pop(L, 1);
  luaL_requiref(L, "lasync.core", luaopen_lasync_core, 0);  /* open it before lasync_spawn */
  lua_pop(L, 1);
  /* the Lua layer from the checkout */
  (void)luaL_dostring(L, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path");

  /* the script becomes a task; the host's loop runs it */
  status = argc > 1 ? luaL_loadfile(L, argv[1]) : luaL_loadstring(L, default_script);
  if (status != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lasync_spawn(L, 0);
  lua_pushvalue(L, -1);
  lua_setglobal(L, "main_task");
  lua_pop(L, 1);

  /* the host's own main loop: run the loop once, then let lasync run what became ready */
  while (lasync_step(L) > 0) uv_run(&loop, UV_RUN_ONCE);

  /* report the script's outcome */
  status = luaL_dostring(L, "local ok, err = pcall(main_task.result, main_task)\n"
                            "if not ok then error(main_task:traceback() or tostring(err), 0) end");
  if (status != LUA_OK) fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
  lua_close(L);  /* closes lasync's handles on the host's loop */
  uv_run(&loop, UV_RUN_DEFAULT);  /* let their close callbacks run */
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "host: handles left open on the loop\n");
    return 1;
  }
  return status == LUA_OK ? 0 : 1;
}
