/*
** main.c: the `lasync` interpreter. Like lua.c, a thin client of the public API: it opens a Lua
** state with lasync.core preloaded (linked in statically), finds the Lua modules, and hands the
** command line to lasync.cli, which runs the script as the main task of async.run.
** It also provides `lasync.interp`: an async line reader for the REPL. (Ctrl-C and Ctrl-\\ are
** handled by lasync.core, the same way for async.main in a plain lua5.4 script.)
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "lasync.h"

#ifndef LASYNC_LUADIR
#define LASYNC_LUADIR "/usr/local/share/lua/5.4"
#endif

/* {====== an async line reader on stdin, for the REPL ======} */

static struct {
  union { uv_tty_t tty; uv_pipe_t pipe; } h;
  int kind;                    /* 0 = not opened, 1 = stream (tty/pipe), 2 = blocking (file) */
  int reading, eof, closed;
  char *buf;
  size_t len, cap;
  lasync_op *op;
} in;

static char *find_newline(void) {
  return in.len ? memchr(in.buf, '\n', in.len) : NULL;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  static char chunk[4096];
  (void)h; (void)suggested;
  b->base = chunk;
  b->len = sizeof chunk;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n > 0) {
    if (in.len + (size_t)n > in.cap) {
      size_t cap = (in.len + (size_t)n) * 2;
      char *p = realloc(in.buf, cap);
      if (p == NULL) abort();
      in.buf = p;
      in.cap = cap;
    }
    memcpy(in.buf + in.len, b->base, (size_t)n);
    in.len += (size_t)n;
  } else if (n < 0) {
    in.eof = 1;
  }
  if (in.op && (find_newline() || in.eof)) {
    lasync_op *op = in.op;
    in.op = NULL;
    uv_read_stop(s);
    in.reading = 0;
    lasync_op_complete(op, 0);
  }
}

/* pushes the next line (without its end of line), or nil at the end of input */
static int push_line(lua_State *L) {
  char *nl = find_newline();
  size_t n = nl ? (size_t)(nl - in.buf) : in.len;
  size_t used = nl ? n + 1 : n;
  if (!nl && in.len == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (n > 0 && in.buf[n - 1] == '\r') n--;
  lua_pushlstring(L, in.buf, n);
  memmove(in.buf, in.buf + used, in.len - used);
  in.len -= used;
  return 1;
}

static int deliver_line(lua_State *L, void *data, int status) {
  (void)data; (void)status;
  return push_line(L);
}

static void cancel_read(void *data) {
  (void)data;
  in.op = NULL;
  if (in.reading) {
    uv_read_stop((uv_stream_t *)&in.h);
    in.reading = 0;
  }
}

static int interp_read_line(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, NULL);
  uv_loop_t *loop = lasync_loop(L);
  if (prompt) {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  if (in.kind == 0) {
    uv_handle_type type = uv_guess_handle(0);
    in.kind = 2;
    if (type == UV_TTY && uv_tty_init(loop, &in.h.tty, 0, 1) == 0)
      in.kind = 1;
    else if (type == UV_NAMED_PIPE && uv_pipe_init(loop, &in.h.pipe, 0) == 0) {
      if (uv_pipe_open(&in.h.pipe, 0) == 0)
        in.kind = 1;
      else
        uv_close((uv_handle_t *)&in.h.pipe, NULL);
    }
  }
  if (in.kind == 2) {  /* a regular file: reading does not block for long */
    char line[4096];
    while (!find_newline() && !in.eof) {
      size_t n;
      if (fgets(line, sizeof line, stdin) == NULL) {
        in.eof = 1;
        break;
      }
      n = strlen(line);
      if (in.len + n > in.cap) {
        size_t cap = (in.len + n) * 2;
        char *p = realloc(in.buf, cap);
        if (p == NULL) return luaL_error(L, "not enough memory");
        in.buf = p;
        in.cap = cap;
      }
      memcpy(in.buf + in.len, line, n);
      in.len += n;
    }
    return push_line(L);
  }
  if (find_newline() || in.eof) return push_line(L);
  in.op = lasync_op_new(L);
  if (!in.reading) {
    uv_read_start((uv_stream_t *)&in.h, on_alloc, on_read);
    in.reading = 1;
  }
  return lasync_op_await(L, in.op, NULL, deliver_line, cancel_read);
}

static int interp_close_stdin(lua_State *L) {
  (void)L;
  if (in.kind == 1 && !in.closed) {
    in.closed = 1;
    uv_close((uv_handle_t *)&in.h, NULL);  /* static memory: nothing to free */
  }
  free(in.buf);
  in.buf = NULL;
  in.len = in.cap = 0;
  return 0;
}

static int interp_stdin_is_tty(lua_State *L) {
  lua_pushboolean(L, uv_guess_handle(0) == UV_TTY);
  return 1;
}

static int luaopen_lasync_interp(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"stdin_is_tty", interp_stdin_is_tty},
    {"read_line", interp_read_line},
    {"close_stdin", interp_close_stdin},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  return 1;
}

/* {====== start-up ======} */

static int file_exists(const char *path) {
  FILE *f = fopen(path, "r");
  if (f) fclose(f);
  return f != NULL;
}

/* Puts the Lua modules on package.path: the checkout next to the binary (build/lasync -> lua/),
** else an installation next to it (bin/lasync -> share/lua/5.4/), else LASYNC_LUADIR. */
static void set_path(lua_State *L) {
  static const char *const rel[] = {"/../lua", "/../share/lua/" LUA_VERSION_MAJOR "."
                                    LUA_VERSION_MINOR};
  char exe[4096], probe[4200], dir[4200];
  size_t size = sizeof exe, i;
  luaL_Buffer b;
  snprintf(dir, sizeof dir, "%s", LASYNC_LUADIR);
  if (uv_exepath(exe, &size) == 0 && strrchr(exe, '/')) {
    *strrchr(exe, '/') = '\0';
    for (i = 0; i < sizeof rel / sizeof rel[0]; i++) {
      snprintf(probe, sizeof probe, "%s%s/lasync/init.lua", exe, rel[i]);
      if (file_exists(probe)) {
        snprintf(dir, sizeof dir, "%s%s", exe, rel[i]);
        break;
      }
    }
  }
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  luaL_addstring(&b, dir);
  luaL_addstring(&b, "/?.lua;");
  luaL_addstring(&b, dir);
  luaL_addstring(&b, "/?/init.lua;");
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int i;
  luaL_openlibs(L);
  lua_warning(L, "@on", 0);  /* unretrieved task errors are reported through warn */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_lasync_core);
  lua_setfield(L, -2, "lasync.core");
  lua_pushcfunction(L, luaopen_lasync_interp);
  lua_setfield(L, -2, "lasync.interp");
  lua_pop(L, 1);
  set_path(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lasync.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  int status, code = 1;
  if (L == NULL) {
    fprintf(stderr, "lasync: cannot create a Lua state: not enough memory\n");
    return 1;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  if (status == LUA_OK) {
    code = (int)lua_tointeger(L, -1);
  } else {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "lasync: %s\n", msg ? msg : "(error object is not a string)");
  }
  fflush(stdout);
  lua_close(L);  /* puts SIGINT and SIGQUIT back (lasync.core) */
  return code;
}
