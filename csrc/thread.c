/*
** thread.c: async.to_thread(fn, ...), which runs fn on libuv's thread pool in a separate Lua
** state while the loop keeps running.
**
** No Lua value crosses threads. The caller serializes fn (lua_dump) and its arguments into one
** malloc'd buffer (the job); a pool thread takes a worker state (one per pool thread in use at
** once, kept and reused), loads fn (cached per state by its bytecode), decodes the arguments,
** calls fn and serializes its results (or its error) into a second buffer; the loop thread then
** completes the task's lasync_op and the task decodes the results in its own state.
**
** Values are copied like a structured clone: nil, booleans, integers, floats, strings and tables
** of these; a table reached twice (shared, or a cycle) is one table on the other side too.
** Metatables are not copied. Anything else is refused with its path (".a[2].b").
**
** Lifetimes. A job is a request of req.c, freed by whoever sees it last: the task when it takes
** the results (deliver), or the after-work callback when the task no longer waits (it was
** cancelled: the job is "abandoned", and uv_cancel'ed if it did not start yet), or the cancel
** callback if the results arrived before the task resumed. Worker states live in the pool (a malloc'd struct,
** not Lua memory, because after-work callbacks may run after the Lua state closed when a host
** owns the loop); the pool's Lua finalizer abandons every job in flight and closes idle states;
** a state still busy on a pool thread is closed when its job ends, and the last job frees the
** pool.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "lualib.h"

#define POOL_MT "lasync.thread.pool"     /* internal: never handed to Lua code */
#define BUF_MT "lasync.thread.buffer"    /* internal: owns a malloc'd buffer until stolen */
#define POOL_KEY "lasync.thread.pool"    /* registry: the pool userdata of this runtime */
#define CACHE_KEY "lasync.thread.cache"  /* worker registry: bytecode -> loaded function */
#define CACHE_MAX 64                     /* functions a worker state keeps loaded */
#define MAXDEPTH 100                     /* nesting of tables that can be copied */
#define BIG_JOB (1u << 20)               /* bytes moved: collect the worker state's garbage */

/* {====== buffers and the value format ======} */

typedef struct wbuf {
  char *p;
  size_t n, cap;
} wbuf;

/* Value tags. A table is 'T', u32 array length, the array values, u32 count of other pairs
** (patched in after they are written), then key, value for each. 'R' u32 refers to the n-th
** table already decoded (1-based, in the order they were opened). */
enum { V_NIL = 'n', V_FALSE = 'f', V_TRUE = 't', V_INT = 'i', V_FLT = 'd', V_STR = 's',
       V_TABLE = 'T', V_REF = 'R' };

static int buf__gc(lua_State *L) {
  wbuf *b = (wbuf *)lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  return 0;
}

/* Pushes a new buffer box whose finalizer frees what it still owns. [-0, +1, m] */
static wbuf *newbuf(lua_State *L) {
  wbuf *b = (wbuf *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, BUF_MT);
  return b;
}

static void newbufmeta(lua_State *L) {
  if (luaL_newmetatable(L, BUF_MT)) {
    lua_pushcfunction(L, buf__gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

static void put(lua_State *L, wbuf *b, const void *d, size_t n) {
  if (b->cap - b->n < n) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap - b->n < n) cap *= 2;
    p = (char *)realloc(b->p, cap);
    if (p == NULL) luaL_error(L, "not enough memory");
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}

static void put_u32(lua_State *L, wbuf *b, uint32_t v) {
  put(L, b, &v, sizeof v);
}

static void put_tag(lua_State *L, wbuf *b, char tag) {
  put(L, b, &tag, 1);
}

/* {------ encoding ------} */

/* One step of the path from the value passed to the current one: an array index, or the key
** at a stack index (lua_next's). */
typedef struct pathstep {
  int keyidx;                  /* stack index of the key, or 0 for an array index */
  lua_Integer i;
} pathstep;

typedef struct enc {
  lua_State *L;
  wbuf *b;
  int seen;                    /* stack index of the table -> number map, 0 until needed */
  uint32_t ntables;
  int depth;
  pathstep path[MAXDEPTH];
} enc;

static void push_path(enc *e) {
  lua_State *L = e->L;
  luaL_Buffer pb;
  int d;
  luaL_buffinit(L, &pb);
  for (d = 0; d < e->depth; d++) {
    pathstep *s = &e->path[d];
    if (s->keyidx == 0) {
      lua_pushfstring(L, "[%I]", (LUAI_UACINT)s->i);
    } else {
      int k = s->keyidx;
      switch (lua_type(L, k)) {
        case LUA_TSTRING: {
          size_t len, j;
          const char *str = lua_tolstring(L, k, &len);
          int ident = len > 0 && len <= 40 && !(str[0] >= '0' && str[0] <= '9');
          for (j = 0; ident && j < len; j++) {
            char c = str[j];
            ident = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9');
          }
          if (ident) {
            lua_pushfstring(L, ".%s", str);
          } else {
            lua_pushlstring(L, str, len > 40 ? 37 : len);
            lua_pushfstring(L, "[\"%s%s\"]", lua_tostring(L, -1), len > 40 ? "..." : "");
            lua_remove(L, -2);
          }
          break;
        }
        case LUA_TNUMBER:
          lua_pushfstring(L, "[%s]", lua_tostring(L, k) ? lua_tostring(L, k) : "?");
          break;
        case LUA_TBOOLEAN:
          lua_pushstring(L, lua_toboolean(L, k) ? "[true]" : "[false]");
          break;
        default:
          lua_pushstring(L, "[<table>]");
          break;
      }
    }
    luaL_addvalue(&pb);
  }
  luaL_pushresult(&pb);
}

/* Pushes the message for a value (or key) that cannot be copied. Returns 1 (failure). */
static int refuse(enc *e, int idx, int is_key) {
  lua_State *L = e->L;
  const char *tn = lua_type(L, idx) == LUA_TTHREAD ? "coroutine" : luaL_typename(L, idx);
  push_path(e);
  if (is_key)
    lua_pushfstring(L, "a %s used as a table key%s%s", tn,
                    lua_rawlen(L, -1) ? " in the table at " : "", lua_tostring(L, -1));
  else
    lua_pushfstring(L, "a %s%s%s", tn, lua_rawlen(L, -1) ? " at " : "", lua_tostring(L, -1));
  lua_remove(L, -2);
  return 1;
}

static int enc_value(enc *e, int idx);

/* Encodes the table at idx; returns 0, or 1 with a message pushed. */
static int enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  wbuf *b = e->b;
  lua_Integer narr = 0, i;
  size_t countpos;
  uint32_t count = 0;
  if (e->depth >= MAXDEPTH) {
    push_path(e);
    lua_pushfstring(L, "tables nested deeper than %d levels at %s", MAXDEPTH, lua_tostring(L, -1));
    lua_remove(L, -2);
    return 1;
  }
  luaL_checkstack(L, 6, "tables nested too deep");
  if (e->seen == 0) {
    lua_newtable(L);
    e->seen = lua_gettop(L);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->seen) == LUA_TNUMBER) {  /* reached before: shared or a cycle */
    put_tag(L, b, V_REF);
    put_u32(L, b, (uint32_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, (lua_Integer)++e->ntables);
  lua_rawset(L, e->seen);
  while (lua_rawgeti(L, idx, narr + 1) != LUA_TNIL) {
    lua_pop(L, 1);
    narr++;
  }
  lua_pop(L, 1);
  if (narr > (lua_Integer)UINT32_MAX) luaL_error(L, "table too large to copy");
  put_tag(L, b, V_TABLE);
  put_u32(L, b, (uint32_t)narr);
  for (i = 1; i <= narr; i++) {
    lua_rawgeti(L, idx, i);
    e->path[e->depth].keyidx = 0;
    e->path[e->depth].i = i;
    e->depth++;
    if (enc_value(e, lua_gettop(L))) return 1;
    e->depth--;
    lua_pop(L, 1);
  }
  countpos = b->n;
  put_u32(L, b, 0);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    if (lua_isinteger(L, k)) {
      lua_Integer ik = lua_tointeger(L, k);
      if (ik >= 1 && ik <= narr) {
        lua_pop(L, 1);
        continue;
      }
    }
    e->path[e->depth].keyidx = k;
    e->depth++;
    if (lua_type(L, k) != LUA_TTABLE && lua_type(L, k) != LUA_TBOOLEAN &&
        lua_type(L, k) != LUA_TNUMBER && lua_type(L, k) != LUA_TSTRING) {
      e->depth--;
      return refuse(e, k, 1);
    }
    if (enc_value(e, k)) return 1;  /* inside a table key: its path shows [<table>] */
    if (enc_value(e, k + 1)) return 1;
    e->depth--;
    lua_pop(L, 1);
    if (count == UINT32_MAX) luaL_error(L, "table too large to copy");
    count++;
  }
  memcpy(b->p + countpos, &count, sizeof count);
  return 0;
}

/* Encodes the value at idx; returns 0, or 1 with a message pushed. */
static int enc_value(enc *e, int idx) {
  lua_State *L = e->L;
  wbuf *b = e->b;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put_tag(L, b, V_NIL); return 0;
    case LUA_TBOOLEAN: put_tag(L, b, lua_toboolean(L, idx) ? V_TRUE : V_FALSE); return 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        put_tag(L, b, V_INT);
        put(L, b, &v, sizeof v);
      } else {
        lua_Number v = lua_tonumber(L, idx);
        put_tag(L, b, V_FLT);
        put(L, b, &v, sizeof v);
      }
      return 0;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      uint64_t n = (uint64_t)len;
      put_tag(L, b, V_STR);
      put(L, b, &n, sizeof n);
      put(L, b, s, len);
      return 0;
    }
    case LUA_TTABLE:
      return enc_table(e, lua_absindex(L, idx));
    default:
      return refuse(e, idx, 0);
  }
}

/* Encodes the values first..last (absolute indices) after a u32 count into b. Returns 0, or
** the position (first-based, 1 for the first value) of the value that cannot be copied, with
** the message pushed. [-0, +(0|1), m] */
static int enc_values(lua_State *L, wbuf *b, int first, int last) {
  enc e;
  int i, top = lua_gettop(L);
  e.L = L;
  e.b = b;
  e.seen = 0;
  e.ntables = 0;
  e.depth = 0;
  put_u32(L, b, (uint32_t)(last - first + 1));
  for (i = first; i <= last; i++) {
    if (enc_value(&e, i)) {
      if (lua_gettop(L) > top + 1) lua_replace(L, top + 1);  /* the message */
      lua_settop(L, top + 1);
      return i - first + 1;
    }
  }
  lua_settop(L, top);
  return 0;
}

/* {------ decoding ------} */

typedef struct dec {
  lua_State *L;
  const char *p, *end;
  int refs;                    /* stack index of the number -> table list (nil until needed) */
  uint32_t ntables;
} dec;

static void get(dec *d, void *out, size_t n) {
  if ((size_t)(d->end - d->p) < n) luaL_error(d->L, "to_thread: corrupt value buffer");
  memcpy(out, d->p, n);
  d->p += n;
}

static uint32_t get_u32(dec *d) {
  uint32_t v;
  get(d, &v, sizeof v);
  return v;
}

/* Pushes the next value. [-0, +1, m] */
static void dec_value(dec *d) {
  lua_State *L = d->L;
  char tag;
  get(d, &tag, 1);
  switch (tag) {
    case V_NIL: lua_pushnil(L); break;
    case V_FALSE: lua_pushboolean(L, 0); break;
    case V_TRUE: lua_pushboolean(L, 1); break;
    case V_INT: {
      lua_Integer v;
      get(d, &v, sizeof v);
      lua_pushinteger(L, v);
      break;
    }
    case V_FLT: {
      lua_Number v;
      get(d, &v, sizeof v);
      lua_pushnumber(L, v);
      break;
    }
    case V_STR: {
      uint64_t n;
      get(d, &n, sizeof n);
      if ((uint64_t)(d->end - d->p) < n) luaL_error(L, "to_thread: corrupt value buffer");
      lua_pushlstring(L, d->p, (size_t)n);
      d->p += n;
      break;
    }
    case V_REF:
      lua_rawgeti(L, d->refs, (lua_Integer)get_u32(d));
      break;
    case V_TABLE: {
      uint32_t narr = get_u32(d), i, nrec;
      int t;
      luaL_checkstack(L, 4, "tables nested too deep");
      if (d->ntables == 0) {  /* the first table: now the list is needed */
        lua_newtable(L);
        lua_replace(L, d->refs);
      }
      lua_createtable(L, narr > (1u << 24) ? (1 << 24) : (int)narr, 0);
      t = lua_gettop(L);
      lua_pushvalue(L, t);
      lua_rawseti(L, d->refs, (lua_Integer)++d->ntables);
      for (i = 1; i <= narr; i++) {
        dec_value(d);
        lua_rawseti(L, t, (lua_Integer)i);
      }
      nrec = get_u32(d);
      for (i = 0; i < nrec; i++) {
        dec_value(d);
        dec_value(d);
        if (lua_isnil(L, -2)) luaL_error(L, "to_thread: corrupt value buffer");
        lua_rawset(L, t);
      }
      break;
    }
    default:
      luaL_error(L, "to_thread: corrupt value buffer");
  }
}

/* Pushes the values of a buffer made by enc_values; returns their number. [-0, +n, m] */
static int dec_values(lua_State *L, const char *p, size_t n) {
  dec d;
  uint32_t i, count;
  int base;
  d.L = L;
  d.p = p;
  d.end = p + n;
  d.ntables = 0;
  lua_pushnil(L);  /* the list of tables, made by the first table */
  d.refs = lua_gettop(L);
  count = get_u32(&d);
  luaL_checkstack(L, (int)(count > 1000000 ? 1000000 : count) + 4, "too many values");
  base = lua_gettop(L);
  for (i = 0; i < count; i++) dec_value(&d);
  lua_remove(L, d.refs);
  (void)base;
  return (int)count;
}

/* {====== the pool: jobs and worker states (no Lua of the main state below) ======} */

typedef struct wstate {
  lua_State *L;
  struct wstate *next;
  unsigned paths_gen;          /* the generation of the pool's paths this state has */
  char **path_copy;            /* path and cpath copied from the pool, not yet set */
} wstate;

enum { J_PENDING, J_OK, J_ERROR, J_BADRESULT, J_FAIL, J_CANCELED };

typedef struct tpool tpool;

typedef struct job {
  lasync__req base;            /* must be first: awaited through req.c */
  uv_work_t req;
  tpool *pool;
  struct job *next, *prev;     /* in the pool's list of jobs in flight (loop thread only) */
  char *in;                    /* bytecode and arguments (owned) */
  size_t nin, ncode;
  char *out;                   /* results, error value or message (owned) */
  size_t nout;
  int status;                  /* J_*, set by the worker */
  int bad;                     /* J_BADRESULT: which result */
  unsigned char abandoned;     /* the task no longer waits: written under the pool's mutex, for
                                  the worker thread (base.op says it on the loop thread) */
} job;

struct tpool {
  uv_mutex_t mu;               /* guards idle, closed and job->abandoned */
  wstate *idle;                /* worker states not running a job */
  job *jobs;                   /* jobs in flight (loop thread only) */
  int njobs;                   /* jobs not freed yet (loop thread only) */
  int closed;                  /* the Lua state closed: close states as their jobs end */
  char *path, *cpath;          /* the caller's package.path and cpath (under mu) */
  unsigned paths_gen;          /* bumped when they change (under mu) */
  const void *seen_path, *seen_cpath;  /* the strings they were copied from (loop thread) */
};

static void pool_free(tpool *p) {
  uv_mutex_destroy(&p->mu);
  free(p->path);
  free(p->cpath);
  free(p);
}

/* The seam's release: unlinks the job and frees its buffers (req.c frees the job), and the pool
** with the last job once the Lua state closed. */
static void job_release(lasync__req *b, int taken) {
  job *j = (job *)b;
  tpool *p = j->pool;
  (void)taken;  /* the deliver function takes the output buffer (j->out = NULL) */
  if (j->next) j->next->prev = j->prev;
  if (j->prev) j->prev->next = j->next; else p->jobs = j->next;
  free(j->in);
  free(j->out);
  if (--p->njobs == 0 && p->closed) pool_free(p);
}

/* The seam's cancel: the task no longer waits (runs no Lua). A job a pool thread runs already
** cannot be stopped: its completion frees it. */
static void job_cancel(lasync__req *b) {
  job *j = (job *)b;
  if (b->done) return;  /* the results arrived first: nobody will take them */
  uv_mutex_lock(&j->pool->mu);
  j->abandoned = 1;
  uv_mutex_unlock(&j->pool->mu);
  uv_cancel((uv_req_t *)&j->req);  /* if it did not start: on_after_work gets UV_ECANCELED */
}

static const lasync__reqtype job_type = {job_cancel, job_release, 0};

/* Stores a copy of the message at the top of a worker state as the job's outcome. */
static void job_message(job *j, lua_State *L, int status) {
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  if (msg == NULL) msg = "(error object is not a string)", len = strlen(msg);
  free(j->out);
  j->out = (char *)malloc(len + 1);
  j->nout = j->out ? len : 0;
  if (j->out) {
    memcpy(j->out, msg, len);
    j->out[len] = '\0';
  }
  j->status = status;
}

/* Moves the buffer in the box at the top into the job's output. */
static void job_output(job *j, lua_State *L, int status) {
  wbuf *b = (wbuf *)lua_touserdata(L, -1);
  free(j->out);
  j->out = b->p;
  j->nout = b->n;
  b->p = NULL;
  j->status = status;
}

static void free_paths(wstate *w) {
  if (w->path_copy) {
    free(w->path_copy[0]);
    free(w->path_copy[1]);
    free(w->path_copy);
    w->path_copy = NULL;
  }
}

static char *strcopy(const char *str) {
  char *d;
  if (str == NULL) return NULL;
  d = (char *)malloc(strlen(str) + 1);
  if (d) strcpy(d, str);
  return d;
}

/* Copies the pool's paths for w (under the mutex, without touching any Lua state) if w has an
** older generation. Returns nonzero on memory failure. */
static int apply_paths(wstate *w, tpool *p) {
  int fail = 0;
  uv_mutex_lock(&p->mu);
  if (w->paths_gen != p->paths_gen) {
    free_paths(w);
    w->path_copy = (char **)calloc(2, sizeof(char *));
    if (w->path_copy) {
      w->path_copy[0] = strcopy(p->path);
      w->path_copy[1] = strcopy(p->cpath);
      fail = (p->path && !w->path_copy[0]) || (p->cpath && !w->path_copy[1]);
    } else {
      fail = 1;
    }
    if (!fail) w->paths_gen = p->paths_gen;
  }
  uv_mutex_unlock(&p->mu);
  if (fail) free_paths(w);
  return fail;
}

/* Runs in a worker state, protected: loads fn (or takes it from the cache), calls it with the
** arguments and encodes its results or error. */
static int job_main(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  wstate *w = (wstate *)lua_touserdata(L, 2);
  tpool *p = j->pool;
  int base, status, bad;
  if (apply_paths(w, p) != 0) return luaL_error(L, "not enough memory");
  if (w->path_copy) {  /* new paths to set in this state */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, LUA_LOADLIBNAME) == LUA_TTABLE) {
      if (w->path_copy[0]) {
        lua_pushstring(L, w->path_copy[0]);
        lua_setfield(L, -2, "path");
      }
      if (w->path_copy[1]) {
        lua_pushstring(L, w->path_copy[1]);
        lua_setfield(L, -2, "cpath");
      }
    }
    free_paths(w);
  }
  lua_settop(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, CACHE_KEY);           /* 1: cache */
  lua_pushlstring(L, j->in, j->ncode);                     /* 2: bytecode */
  lua_pushvalue(L, 2);
  if (lua_rawget(L, 1) != LUA_TFUNCTION) {
    lua_Integer count;
    lua_pop(L, 1);
    if (luaL_loadbufferx(L, j->in, j->ncode, "=to_thread", "b") != LUA_OK) return lua_error(L);
    lua_rawgeti(L, 1, 0);  /* the number of cached functions */
    count = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (count >= CACHE_MAX) {  /* full: start over */
      lua_newtable(L);
      lua_replace(L, 1);
      lua_pushvalue(L, 1);
      lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
      count = 0;
    }
    lua_pushinteger(L, count + 1);
    lua_rawseti(L, 1, 0);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
  }
  base = lua_gettop(L);                                    /* fn */
  dec_values(L, j->in + j->ncode, j->nin - j->ncode);
  status = lua_pcall(L, lua_gettop(L) - base, LUA_MULTRET, 0);
  newbuf(L);
  if (status == LUA_OK) {
    lua_insert(L, base);
    bad = enc_values(L, (wbuf *)lua_touserdata(L, base), base + 1, lua_gettop(L));
    if (bad) {
      j->bad = bad;
      job_message(j, L, J_BADRESULT);
      return 0;
    }
    lua_settop(L, base);
    job_output(j, L, J_OK);
    return 0;
  }
  /* fn raised: the error value goes back if it can be copied; an object with a metatable (an
  ** error class: its methods cannot cross) as its tostring; anything else as a message */
  lua_insert(L, -2);                                       /* box, err */
  if (lua_type(L, -1) == LUA_TTABLE && lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    luaL_tolstring(L, -1, NULL);
    lua_replace(L, -2);
  }
  if (enc_values(L, (wbuf *)lua_touserdata(L, -2), lua_gettop(L), lua_gettop(L))) {
    ((wbuf *)lua_touserdata(L, -3))->n = 0;
    lua_pushfstring(L, "to_thread: fn raised an error value that cannot be copied (%s)",
                    lua_tostring(L, -1));
    lua_replace(L, -3);                                    /* box, message, refusal */
    lua_pop(L, 1);
    enc_values(L, (wbuf *)lua_touserdata(L, -2), lua_gettop(L), lua_gettop(L));
  }
  lua_pop(L, 1);
  job_output(j, L, J_ERROR);
  return 0;
}

/* A new worker state's libraries and tables; protected: out of memory on a pool thread must
** fail the call, not reach the panic function. */
static int wstate_setup(lua_State *L) {
  luaL_openlibs(L);
  newbufmeta(L);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
  return 0;
}

static wstate *wstate_new(void) {
  wstate *w = (wstate *)malloc(sizeof *w);
  if (w == NULL) return NULL;
  w->L = luaL_newstate();
  if (w->L == NULL) {
    free(w);
    return NULL;
  }
  w->next = NULL;
  w->paths_gen = 0;
  w->path_copy = NULL;
  lua_pushcfunction(w->L, wstate_setup);
  if (lua_pcall(w->L, 0, 0, 0) != LUA_OK) {
    lua_close(w->L);
    free(w);
    return NULL;
  }
  return w;
}

static void wstate_close(wstate *w) {
  free_paths(w);
  lua_close(w->L);
  free(w);
}

/* uv_queue_work's work callback, on a pool thread. */
static void on_work(uv_work_t *req) {
  job *j = lasync__container_of(req, job, req);
  tpool *p = j->pool;
  wstate *w;
  uv_mutex_lock(&p->mu);
  if (j->abandoned) {  /* cancelled while queued, too late for uv_cancel: do nothing */
    uv_mutex_unlock(&p->mu);
    j->status = J_CANCELED;
    return;
  }
  w = p->idle;
  if (w) p->idle = w->next;
  uv_mutex_unlock(&p->mu);
  if (w == NULL) {
    w = wstate_new();
    if (w == NULL) {
      j->status = J_FAIL;
      return;
    }
  }
  lua_pushcfunction(w->L, job_main);
  lua_pushlightuserdata(w->L, j);
  lua_pushlightuserdata(w->L, w);
  if (lua_pcall(w->L, 2, 0, 0) != LUA_OK) job_message(j, w->L, J_FAIL);
  lua_settop(w->L, 0);
  if (j->nin + j->nout >= BIG_JOB)  /* an idle state would sit on the copies until reused */
    lua_gc(w->L, LUA_GCCOLLECT);
  uv_mutex_lock(&p->mu);
  if (p->closed) {
    uv_mutex_unlock(&p->mu);
    wstate_close(w);
    return;
  }
  w->next = p->idle;
  p->idle = w;
  uv_mutex_unlock(&p->mu);
}

/* uv_queue_work's after-work callback, on the loop thread: runs no Lua of the main state. */
static void on_after_work(uv_work_t *req, int status) {
  job *j = lasync__container_of(req, job, req);
  if (status == UV_ECANCELED) j->status = J_CANCELED;
  lasync__req_done(&j->base, 0);  /* the task frees the job when it takes the results */
}

/* {====== Lua API ======} */

/* Runs in the task when the job is done: pushes fn's results, or raises its error. */
static int on_deliver(lua_State *L, void *data, int status) {
  job *j = (job *)data;
  int js = j->status, bad = j->bad;
  wbuf *b;
  (void)status;
  b = newbuf(L);  /* the box owns the output now: decoding may raise (memory) */
  b->p = j->out;
  b->n = j->nout;
  j->out = NULL;
  lasync__req_free(&j->base);
  switch (js) {
    case J_OK: {
      int n = dec_values(L, b->p, b->n);
      return n;
    }
    case J_ERROR:
      dec_values(L, b->p, b->n);
      return lua_error(L);
    case J_BADRESULT:
      return luaL_error(L, "to_thread: result #%d: %s cannot be copied back from the thread: "
                        "only nil, booleans, numbers, strings and tables of these can",
                        bad, b->p ? b->p : "?");
    default:
      return luaL_error(L, "to_thread: the thread could not run the function: %s",
                        b->p ? b->p : "not enough memory");
  }
}

typedef struct dumpstate {
  luaL_Buffer b;
  int init;
} dumpstate;

/* lua_dump's writer; the buffer starts on the first call, after lua_dump took the function
** from the top (luaL_buffinit pushes a placeholder). */
static int writer(lua_State *L, const void *p, size_t sz, void *ud) {
  dumpstate *ds = (dumpstate *)ud;
  if (!ds->init) {
    ds->init = 1;
    luaL_buffinit(L, &ds->b);
  }
  luaL_addlstring(&ds->b, (const char *)p, sz);
  return 0;
}

/* Raises "bad argument #arg to 'to_thread' (msg)": luaL_argerror would name the function by
** where it finds it first (lasync.core.to_thread). Does not return. */
static int argerror(lua_State *L, int arg, const char *msg) {
  return luaL_error(L, "bad argument #%d to 'to_thread' (%s)", arg, msg);
}

/* Pushes the bytecode of the function at 1, after checking its upvalues; cached per closure in
** the weak table at upvalue 3. [-0, +1, e] */
static void push_code(lua_State *L) {
  int i;
  const char *name;
  lua_pushvalue(L, 1);
  if (lua_rawget(L, lua_upvalueindex(3)) == LUA_TSTRING) return;
  lua_pop(L, 1);
  if (lua_iscfunction(L, 1))
    argerror(L, 1, "a C function cannot run on a thread: wrap the call in a Lua function");
  for (i = 1; (name = lua_getupvalue(L, 1, i)) != NULL; i++) {
    int env = strcmp(name, "_ENV") == 0;
    if (!env && i == 1) {  /* stripped bytecode has no names: the global table is _ENV */
      lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
      env = lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!env) {
      lua_pushfstring(L, "the function uses the upvalue '%s', a local variable of an enclosing "
                      "function: it cannot be shared with a thread; pass its value as an "
                      "argument", name);
      argerror(L, 1, lua_tostring(L, -1));
    }
  }
  {
    dumpstate ds;
    int top = lua_gettop(L);
    ds.init = 0;
    lua_pushvalue(L, 1);
    if (lua_dump(L, writer, &ds, 0) != 0 || !ds.init)
      argerror(L, 1, "cannot dump the function");
    luaL_pushresult(&ds.b);
    lua_remove(L, top + 1);  /* the function's copy */
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, lua_upvalueindex(3));
}

/* Copies package.path and package.cpath of the caller for the worker states when they changed
** since the last call (compared by string identity: cheap). */
static void sync_paths(lua_State *L, tpool *p) {
  const void *sp, *scp;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_LOADLIBNAME) == LUA_TTABLE) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    sp = lua_type(L, -2) == LUA_TSTRING ? lua_topointer(L, -2) : NULL;
    scp = lua_type(L, -1) == LUA_TSTRING ? lua_topointer(L, -1) : NULL;
    if (sp != p->seen_path || scp != p->seen_cpath) {
      char *np = sp ? strcopy(lua_tostring(L, -2)) : NULL;
      char *ncp = scp ? strcopy(lua_tostring(L, -1)) : NULL;
      if ((sp && np == NULL) || (scp && ncp == NULL)) {
        free(np);
        free(ncp);
        luaL_error(L, "not enough memory");
      }
      uv_mutex_lock(&p->mu);
      free(p->path);
      free(p->cpath);
      p->path = np;
      p->cpath = ncp;
      p->paths_gen++;
      uv_mutex_unlock(&p->mu);
      p->seen_path = sp;  /* anchored below: their addresses cannot be reused */
      p->seen_cpath = scp;
      lua_pushvalue(L, -2);
      lua_setfield(L, LUA_REGISTRYINDEX, "lasync.thread.path");
      lua_pushvalue(L, -1);
      lua_setfield(L, LUA_REGISTRYINDEX, "lasync.thread.cpath");
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
}

/* async.to_thread(fn, ...) -> fn's results; upvalues: runtime, pool, code cache */
static int core_to_thread(lua_State *L) {
  tpool *p = *(tpool **)lua_touserdata(L, lua_upvalueindex(2));
  int n = lua_gettop(L), bad;
  wbuf *b;
  size_t ncode;
  const char *code;
  job *j;
  if (lua_type(L, 1) != LUA_TFUNCTION)
    argerror(L, 1, lua_pushfstring(L, "function expected, got %s", luaL_typename(L, 1)));
  /* a task that is already cancelled must not start fn (uv_cancel cannot take back a job a
  ** free pool thread already picked up) */
  lasync__check_cancel(L, lasync__rt(L), lasync__check_suspend(L, lasync__rt(L), "to_thread"));
  sync_paths(L, p);
  push_code(L);                                            /* n + 1 */
  b = newbuf(L);                                           /* n + 2 */
  code = lua_tolstring(L, n + 1, &ncode);
  b->p = (char *)malloc(ncode + 256);  /* the code and, usually, the arguments */
  if (b->p == NULL) return luaL_error(L, "not enough memory");
  b->cap = ncode + 256;
  put(L, b, code, ncode);
  bad = enc_values(L, b, 2, n);
  if (bad) {
    lua_pushfstring(L, "%s cannot be copied to a thread: only nil, booleans, numbers, strings "
                    "and tables of these can", lua_tostring(L, -1));
    return argerror(L, bad + 1, lua_tostring(L, -1));
  }
  j = (job *)lasync__req_new(L, &job_type, sizeof *j);     /* n + 3: its op */
  j->pool = p;
  j->in = b->p;
  j->nin = b->n;
  j->ncode = ncode;
  b->p = NULL;
  p->njobs++;
  j->next = p->jobs;
  if (p->jobs) p->jobs->prev = j;
  p->jobs = j;
  if (uv_queue_work(lasync__rt(L)->loop, &j->req, on_work, on_after_work) != 0) {
    lasync__req_free(&j->base);
    return luaL_error(L, "to_thread: cannot queue work on the thread pool");
  }
  lua_replace(L, n + 1);  /* the op stays on the stack until the await */
  lua_settop(L, n + 1);
  return lasync__req_await(L, &j->base, 0, on_deliver);
}

/* The pool's finalizer (lua_close): no task will take results any more. Jobs in flight are
** abandoned (their after-work callback frees them, when the loop runs next), idle states are
** closed now, busy ones when their job ends, and the last job frees the pool. */
static int pool__gc(lua_State *L) {
  tpool **pp = (tpool **)lua_touserdata(L, 1);
  tpool *p = *pp;
  wstate *w;
  job *j, *next;
  if (p == NULL) return 0;
  *pp = NULL;
  uv_mutex_lock(&p->mu);
  p->closed = 1;
  for (j = p->jobs; j; j = j->next)  /* in the same locked section: a worker that picks up a */
    j->abandoned = 1;                /* queued job now skips it */
  w = p->idle;
  p->idle = NULL;
  uv_mutex_unlock(&p->mu);
  while (w) {
    wstate *wnext = w->next;
    wstate_close(w);
    w = wnext;
  }
  if (p->njobs == 0) {
    pool_free(p);
    return 0;
  }
  /* a job whose results arrived but whose task never resumed is freed now, one in flight when
  ** its after-work callback runs; the last one frees the pool */
  for (j = p->jobs; j; j = next) {
    next = j->next;
    lasync__req_drop(&j->base);
  }
  return 0;
}

void lasync__open_thread(lua_State *L, lasync__runtime *rt) {
  newbufmeta(L);
  lua_pushlightuserdata(L, rt);
  if (lua_getfield(L, LUA_REGISTRYINDEX, POOL_KEY) != LUA_TUSERDATA) {
    tpool **pp;
    lua_pop(L, 1);
    pp = (tpool **)lua_newuserdatauv(L, sizeof *pp, 0);
    *pp = NULL;
    if (luaL_newmetatable(L, POOL_MT)) {
      lua_pushcfunction(L, pool__gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *pp = (tpool *)calloc(1, sizeof **pp);
    if (*pp == NULL) luaL_error(L, "not enough memory");
    if (uv_mutex_init(&(*pp)->mu) != 0) {
      free(*pp);
      *pp = NULL;
      luaL_error(L, "to_thread: cannot create a mutex");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  }
  lua_newtable(L);  /* closure -> bytecode, weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushcclosure(L, core_to_thread, 3);
  lua_setfield(L, -2, "to_thread");
}
