/*
** process.c: subprocesses (uv_spawn). A process's stdio pipes are Streams (stream.c).
**
** The uv_process_t is malloc'd and stays open until the child exits: libuv reaps a child only
** while its handle is open, so the handle is closed in the exit callback, never earlier (a
** cancelled wait or a collected Process leaves no zombie). A collected Process whose child still
** runs unrefs the handle (it no longer keeps the loop alive) and leaves it to the exit callback.
** Open handles are listed on the runtime: at teardown (lua_close) they are closed, and a child
** still running goes on running, unreaped, so that no exit callback comes to a runtime that is
** gone and an owned loop can close.
*/
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define LASYNC_PROCESS_MT "lasync.process"  /* also in error.c's class names */

extern char **environ;

typedef struct pwaiter pwaiter;

typedef struct lproc {
  lasync__runtime *rt;
  uv_process_t *h;             /* malloc'd; NULL once the child exited (closed in on_child_exit) */
  pwaiter *waiters;            /* the tasks waiting in wait() */
  int pid;
  int64_t code;
  int termsig;
  unsigned char exited;
} lproc;

/* A task waiting in wait(): a userdata on its stack, so anchored while it waits. It stays
** linked until its deliver or cancel runs. */
struct pwaiter {
  lasync_op *op;
  lproc *p;
  pwaiter *next, *prev;
};

/* The malloc'd process handle, linked in rt->procs while open. */
typedef struct lasync__proch {
  uv_process_t h;              /* first: the handle's address is the record's */
  lasync__runtime *rt;
  struct lasync__proch *next, *prev;
} proch;

/* Unlinks the process handle from its runtime's list and closes it. */
static void proch_close(uv_process_t *h) {
  proch *c = (proch *)h;
  if (c->prev) c->prev->next = c->next; else c->rt->procs = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  uv_close((uv_handle_t *)h, lasync__free_handle);
}

void lasync__close_processes(lasync__runtime *rt) {
  while (rt->procs) {
    proch *c = rt->procs;
    lproc *p = (lproc *)c->h.data;
    if (p) p->h = NULL;
    c->h.data = NULL;
    proch_close(&c->h);
  }
}

/* Pushes the name of signal n ("SIGTERM"), or "SIG<n>" for one without a name. */
static void push_signame(lua_State *L, int n) {
  const char *name = lasync__signal_name(n);
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushfstring(L, "SIG%d", n);
}

/* The signal number of the argument at idx (a name such as "SIGTERM" or "TERM", or a number). */
static int check_signal(lua_State *L, int idx, int def) {
  const char *name;
  int n;
  if (lua_isnoneornil(L, idx)) return def;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer k = luaL_checkinteger(L, idx);
    luaL_argcheck(L, k >= 0 && k < 65, idx, "not a signal number");
    return (int)k;
  }
  name = luaL_checkstring(L, idx);
  n = lasync__signal_number(name);
  if (n == 0) return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
  return n;
}

/* {====== the child's exit: no Lua ======} */

static void on_child_exit(uv_process_t *h, int64_t code, int termsig) {
  lproc *p = (lproc *)h->data;
  pwaiter *w;
  proch_close(h);  /* reaped already: the handle is done */
  if (p == NULL) return;
  p->h = NULL;
  p->exited = 1;
  p->code = code;
  p->termsig = termsig;
  for (w = p->waiters; w; w = w->next) lasync_op_complete(w->op, 0);
}

/* {====== Lua API ======} */

static lproc *checkproc(lua_State *L) {
  return (lproc *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_PROCESS);
}

static int push_status(lua_State *L, lproc *p) {
  if (p->termsig) {
    lua_pushnil(L);
    push_signame(L, p->termsig);
  } else {
    lua_pushinteger(L, (lua_Integer)p->code);
    lua_pushnil(L);
  }
  return 2;
}

static void unlink_waiter(pwaiter *w) {
  if (w->prev) w->prev->next = w->next; else w->p->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  w->next = w->prev = NULL;
}

static int wait_deliver(lua_State *L, void *data, int status) {
  pwaiter *w = (pwaiter *)data;
  lproc *p = w->p;
  (void)status;
  unlink_waiter(w);
  lua_settop(L, 1);
  return push_status(L, p);
}

static void wait_cancel(void *data) {
  unlink_waiter((pwaiter *)data);  /* the handle stays open: libuv still reaps the child */
}

/* p:wait() -> code, signal: the exit status (nil if a signal ended the child) and the name of
** that signal (nil if it exited). Any number of tasks may wait. */
static int proc_wait(lua_State *L) {
  lproc *p = checkproc(L);
  pwaiter *w;
  lua_settop(L, 1);
  if (p->exited) return push_status(L, p);
  w = (pwaiter *)lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->p = p;
  w->op = lasync_op_new(L);
  w->next = p->waiters;  /* all are woken at once: the order does not matter */
  if (w->next) w->next->prev = w;
  p->waiters = w;
  return lasync_op_await(L, w->op, w, wait_deliver, wait_cancel);
}

/* p:kill([signal]) -> true if the signal was sent, false if the child already exited */
static int proc_kill(lua_State *L) {
  lproc *p = checkproc(L);
  int sig = check_signal(L, 2, SIGTERM), r;
  if (p->h == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  r = uv_process_kill(p->h, sig);
  if (r == UV_ESRCH) {  /* exited, not reaped yet */
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r != 0) return lasync__stream_uverror(L, "process", r, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* p:status() -> exited, code, signal (without waiting) */
static int proc_status(lua_State *L) {
  lproc *p = checkproc(L);
  lua_pushboolean(L, p->exited);
  if (!p->exited) return 1;
  push_status(L, p);
  return 3;
}

static int proc__gc(lua_State *L) {
  lproc *p = (lproc *)lua_touserdata(L, 1);
  if (p->h) {
    p->h->data = NULL;  /* on_child_exit closes it */
    uv_unref((uv_handle_t *)p->h);
    p->h = NULL;
  }
  return 0;
}

/* Reads the stdio option `name` of the options table at idx: 0 null, 1 pipe, 2 inherit. */
static int stdio_mode(lua_State *L, int idx, const char *name, int def) {
  static const char *const modes[] = {"null", "pipe", "inherit", NULL};
  int m = def;
  lua_getfield(L, idx, name);
  if (!lua_isnil(L, -1)) {
    const char *s = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "spawn: option '%s' must be a string", name);
    for (m = 0; modes[m]; m++)
      if (strcmp(modes[m], s) == 0) break;
    if (modes[m] == NULL)
      luaL_error(L, "spawn: option '%s' must be \"pipe\", \"inherit\" or \"null\", got \"%s\"",
                 name, s);
  }
  lua_pop(L, 1);
  return m;
}

static void free_strv(char **v) {
  char **q;
  if (v == NULL) return;
  for (q = v; *q; q++) free(*q);
  free(v);
}

/* The child's environment: the inherited one (unless clear) with the entries of the table at
** idx added or replaced. A malloc'd, NULL-terminated array of malloc'd strings, or NULL when out
** of memory. The table was checked (string keys, string or number values). */
static char **build_env(lua_State *L, int idx, int clear) {
  size_t n = 0, k = 0, i;
  char **env;
  if (!clear)
    while (environ[n]) n++;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    n++;
  }
  env = (char **)calloc(n + 1, sizeof *env);
  if (env == NULL) return NULL;
  for (i = 0; !clear && environ[i]; i++) {
    const char *eq = strchr(environ[i], '=');
    int replaced;
    if (eq == NULL) continue;
    lua_pushlstring(L, environ[i], (size_t)(eq - environ[i]));
    replaced = lua_rawget(L, idx) != LUA_TNIL;
    lua_pop(L, 1);
    if (replaced) continue;
    if ((env[k++] = strdup(environ[i])) == NULL) goto oom;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kl, vl;
    const char *key = lua_tolstring(L, -2, &kl);
    const char *val;
    lua_pushvalue(L, -1);  /* tolstring on a copy: a number value must not change the table */
    val = lua_tolstring(L, -1, &vl);
    env[k] = (char *)malloc(kl + vl + 2);
    if (env[k] == NULL) {
      lua_pop(L, 3);
      goto oom;
    }
    memcpy(env[k], key, kl);
    env[k][kl] = '=';
    memcpy(env[k] + kl + 1, val, vl + 1);
    k++;
    lua_pop(L, 2);
  }
  return env;
oom:
  free_strv(env);
  return NULL;
}

static const char feeds_key = 'f';  /* registry: stdin streams being fed -> true */

/* Anchors the stream on the stack top while it feeds the child its input, so that the
** input is not cut short when the Process is collected; forgets the streams done feeding. */
static void anchor_feed(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &feeds_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &feeds_key);
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {  /* clearing the current field is allowed during lua_next */
    lua_pop(L, 1);
    if (!lasync__stream_feeding((lasync__stream *)lua_touserdata(L, -1))) {
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4);
    }
  }
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* core.process_spawn(argv, opts) -> process, pid, stdin, stdout, stderr
** argv: list of strings (argv[1] is the program, searched in PATH); opts: stdin, stdout, stderr
** ("pipe" | "inherit" | "null"), input (a string fed to stdin, which must be "pipe"), env (a
** table of name = value), clear_env, cwd. */
static int core_process_spawn(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  uv_pipe_t *pipes[3] = {NULL, NULL, NULL};
  static const char *const names[3] = {"stdin", "stdout", "stderr"};
  int modes[3], i, r, nargs, has_env, clear_env;
  char **args = NULL, **env = NULL;
  const char *cwd = NULL, *input = NULL;
  size_t input_len = 0;
  lproc *p;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  /* check everything before allocating */
  nargs = (int)luaL_len(L, 1);
  if (nargs < 1) luaL_error(L, "spawn: the command is missing (expected {cmd, arg1, ...})");
  for (i = 1; i <= nargs; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
      luaL_error(L, "spawn: argument %d of the command must be a string, got %s", i,
                 luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  for (i = 0; i < 3; i++) modes[i] = stdio_mode(L, 2, names[i], 2);
  if (lua_getfield(L, 2, "input") != LUA_TNIL) {  /* index 3 from here on */
    input = luaL_checklstring(L, -1, &input_len);
    if (modes[0] != 1) luaL_error(L, "spawn: input needs stdin = \"pipe\"");
  }
  lua_getfield(L, 2, "cwd");  /* 4 */
  if (!lua_isnil(L, 4)) {
    if (lua_type(L, 4) != LUA_TSTRING) luaL_error(L, "spawn: option 'cwd' must be a string");
    cwd = lua_tostring(L, 4);
  }
  lua_getfield(L, 2, "clear_env");
  clear_env = lua_toboolean(L, -1);
  lua_pop(L, 1);
  has_env = lua_getfield(L, 2, "env") != LUA_TNIL;  /* 5 */
  if (has_env) {
    if (!lua_istable(L, 5)) luaL_error(L, "spawn: option 'env' must be a table");
    lua_pushnil(L);
    while (lua_next(L, 5)) {
      if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING &&
                                             lua_type(L, -1) != LUA_TNUMBER))
        luaL_error(L, "spawn: env must map names (strings) to strings");
      if (strchr(lua_tostring(L, -2), '=') || lua_tostring(L, -2)[0] == '\0')
        luaL_error(L, "spawn: env name '%s' is empty or contains '='", lua_tostring(L, -2));
      lua_pop(L, 1);
    }
  } else if (clear_env) {
    lua_pop(L, 1);
    lua_newtable(L);  /* clear_env without env: an empty environment */
    has_env = 1;
  }
  if (!has_env) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  p = (lproc *)lua_newuserdatauv(L, sizeof *p, 0);  /* 6 */
  memset(p, 0, sizeof *p);
  p->rt = rt;
  lasync__setclass(L, rt, LASYNC_CLS_PROCESS);
  /* argv: pointers into the strings of the argv table, alive during this call */
  args = (char **)calloc((size_t)nargs + 1, sizeof *args);
  if (args == NULL) return luaL_error(L, "not enough memory");
  for (i = 1; i <= nargs; i++) {
    lua_rawgeti(L, 1, i);
    args[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);  /* the table keeps the string alive */
  }
  if (has_env && (env = build_env(L, 5, clear_env)) == NULL) {
    free(args);
    return luaL_error(L, "not enough memory");
  }
  memset(&o, 0, sizeof o);
  memset(stdio, 0, sizeof stdio);
  for (i = 0; i < 3; i++) {
    if (modes[i] == 1) {
      pipes[i] = (uv_pipe_t *)malloc(sizeof(uv_pipe_t));
      if (pipes[i] == NULL) break;
      uv_pipe_init(rt->loop, pipes[i], 0);
      stdio[i].flags = (uv_stdio_flags)(UV_CREATE_PIPE |
                                        (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE));
      stdio[i].data.stream = (uv_stream_t *)pipes[i];
    } else if (modes[i] == 2) {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = i;
    } else {
      stdio[i].flags = UV_IGNORE;
    }
  }
  p->h = (uv_process_t *)malloc(sizeof(proch));
  if (i < 3 || p->h == NULL) {
    r = UV_ENOMEM;
  } else {
    o.exit_cb = on_child_exit;
    o.file = args[0];
    o.args = args;
    o.env = env;
    o.cwd = cwd;
    o.stdio_count = 3;
    o.stdio = stdio;
    r = uv_spawn(rt->loop, p->h, &o);
  }
  free(args);
  free_strv(env);
  if (r != 0) {
    for (i = 0; i < 3; i++)
      if (pipes[i]) uv_close((uv_handle_t *)pipes[i], lasync__free_handle);
    if (p->h) {
      if (r == UV_ENOMEM)
        free(p->h);
      else
        uv_close((uv_handle_t *)p->h, lasync__free_handle);  /* initialized even when spawn fails */
      p->h = NULL;
    }
    p->exited = 1;
    lua_rawgeti(L, 1, 1);
    lasync__push_error(L, "spawn", "cannot run '%s'%s%s: %s: %s", lua_tostring(L, -1),
                       cwd ? " in " : "", cwd ? cwd : "", uv_err_name(r), uv_strerror(r));
    lua_pushstring(L, uv_err_name(r));
    lua_setfield(L, -2, "code");
    return lua_error(L);
  }
  p->h->data = p;
  p->pid = p->h->pid;
  {
    proch *c = (proch *)p->h;
    c->rt = rt;
    c->prev = NULL;
    c->next = rt->procs;
    if (c->next) c->next->prev = c;
    rt->procs = c;
  }
  lua_pushinteger(L, p->pid);
  for (i = 0; i < 3; i++) {
    if (pipes[i]) {
      lasync__stream *s = lasync__stream_wrap(L, rt, (uv_stream_t *)pipes[i]);
      if (i == 0 && input) {
        int e = lasync__stream_feed(s, input, input_len);
        if (e != 0 && e != UV_EPIPE) return lasync__stream_uverror(L, "network", e, "stdin");
        if (e == 0) anchor_feed(L);
      }
    } else {
      lua_pushnil(L);
    }
  }
  return 5;  /* process, pid, stdin, stdout, stderr */
}

void lasync__open_process(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg methods[] = {
    {"wait", proc_wait}, {"kill", proc_kill}, {"status", proc_status}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {{"__gc", proc__gc}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"process_spawn", core_process_spawn}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_PROCESS, LASYNC_PROCESS_MT, methods, meta);
  luaL_setfuncs(L, funcs, 1);
}
