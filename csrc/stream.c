/*
** stream.c: the Stream type (one type for TCP connections, Unix sockets, pipes and process
** stdio, all uv_stream_t based), listeners for servers, and connecting (names are resolved by
** dns.c; connect and shutdown are awaited requests of req.c).
**
** A stream owns a malloc'd uv handle (freed in its close callback) and a read buffer. Reading
** is started when a task first reads and continues ahead while fewer than READ_HIGH bytes wait
** unread (or while a pending read needs more); then libuv stops reading, so an idle reader
** bounds what is buffered. Writes try uv_try_write first and queue the rest; a write suspends
** while the queue is above WRITE_HIGH (backpressure). Callbacks only record what happened and
** complete the lasync_op of the waiting task; the continuation raises, in the task.
**
** The Lua layer (lua/lasync/stream.lua) adds connect with timeouts and several addresses,
** servers (an accept loop in a task) and the convenience methods.
*/
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"

#define LASYNC_STREAM_MT "lasync.stream"      /* also in error.c's class names */
#define LASYNC_LISTENER_MT "lasync.listener"
#define READ_HIGH (64 * 1024)    /* unread bytes before reading pauses (read-ahead) */
#define READ_CHUNK (64 * 1024)   /* free room offered to each read */
#define WRITE_HIGH (64 * 1024)   /* write queue bytes above which write suspends */
#define WRITE_LOW (16 * 1024)    /* ... until the queue is down to this */
#define MAX_SEP 64               /* longest separator of read_until */
#define DEFAULT_LINE_MAX (64 * 1024)

enum { ST_OK = 0, ST_CLOSED = 1 };    /* statuses of completed ops */
enum { RM_SOME, RM_EXACTLY, RM_UNTIL, RM_LINE, RM_ALL };

typedef struct wwaiter wwaiter;

typedef struct lstream {
  lasync__runtime *rt;
  uv_stream_t *h;              /* malloc'd; NULL once closed; freed in its close callback */
  char *buf;                   /* unread bytes: buf[off..len) */
  size_t off, len, cap;
  size_t want;                 /* a waiting read needs this many unread bytes */
  size_t scanned;              /* read_until: bytes after off already searched */
  size_t rn;                   /* read: at most; read_exactly: exactly; read_until: max */
  lasync_op *rop;              /* the task waiting to read */
  lasync_op *wop;              /* the task in close() waiting for the write queue to empty */
  wwaiter *whead, *wtail;      /* writers waiting for the queue to drain, in order */
  uv_shutdown_t *feedreq;      /* lasync__stream_feed's shutdown, until it completes */
  int rbase;                   /* stack top under the waiting reader's op userdata */
  int rerr;                    /* UV_EOF or the read error, once reading ended */
  int werr;                    /* the first failed write */
  unsigned char reading, rmode, shut, tcp;
  unsigned char closing;       /* close() waits for the write queue: no new operations */
  size_t seplen;
  char sep[MAX_SEP];
} lstream;

typedef struct llistener {
  lasync__runtime *rt;
  uv_stream_t *h;              /* malloc'd; NULL once closed; freed in its close callback */
  lasync_op *aop;              /* the task waiting in accept */
  int abase;
  int pending;                 /* connections libuv reported, not yet accepted */
  int err;                     /* a failed accept */
  unsigned char tcp;
  char *path;                  /* a Unix socket's file, removed on close */
} llistener;

/* {====== helpers ======} */

int lasync__stream_uverror(lua_State *L, const char *kind, int err, const char *what) {
  lasync__push_error(L, kind, "%s: %s (%s)", uv_err_name(err), uv_strerror(err), what);
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "code");
  return lua_error(L);
}

static int raise_closed(lua_State *L, const char *what) {
  lasync__push_error(L, "closed", "%s: the stream was closed while a task waited on it", what);
  return lua_error(L);
}

/* Kind of a read or write failure. */
static const char *io_kind(int err) {
  return err == UV_ETIMEDOUT ? "timeout" : "network";
}

/* Pushes the address in ss as host, port. [-0, +2, m] */
static int push_addr(lua_State *L, const struct sockaddr_storage *ss) {
  char ip[64] = "";
  int port = 0;
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
  } else if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
    return 2;
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

/* {====== the stream: reading and writing, no Lua ======} */

static void stop_reading(lstream *s) {
  if (s->reading) {
    uv_read_stop(s->h);
    s->reading = 0;
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  lstream *s = (lstream *)h->data;
  (void)hint;
  b->base = NULL;
  b->len = 0;
  if (s == NULL) return;  /* detached: libuv reports UV_ENOBUFS, on_read ignores it */
  if (s->off > 0 && (s->off == s->len || s->cap - s->len < READ_CHUNK)) {
    memmove(s->buf, s->buf + s->off, s->len - s->off);
    s->len -= s->off;
    s->off = 0;
  }
  if (s->cap - s->len < READ_CHUNK) {
    size_t ncap = s->cap ? s->cap : READ_CHUNK;
    char *p;
    while (ncap - s->len < READ_CHUNK) ncap *= 2;
    p = (char *)realloc(s->buf, ncap);
    if (p == NULL) return;
    s->buf = p;
    s->cap = ncap;
  }
  b->base = s->buf + s->len;
  b->len = s->cap - s->len;
}

/* Completes the waiting reader's op. s->rop stays set (the reader owns the read) until its
** deliver or cancel runs: a late cancel must not clear another task's op. */
static void wake_reader(lstream *s, int status) {
  if (s->rop) lasync_op_complete(s->rop, status);
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *b) {
  lstream *s = (lstream *)h->data;
  size_t avail;
  (void)b;
  if (s == NULL) return;
  if (nread > 0)
    s->len += (size_t)nread;
  else if (nread < 0) {
    s->rerr = (int)nread;  /* UV_EOF or an error: reading is over */
    stop_reading(s);
  }
  avail = s->len - s->off;
  if (s->reading && avail >= READ_HIGH && avail >= s->want) stop_reading(s);
  if (s->rop && (avail >= s->want || s->rerr)) wake_reader(s, ST_OK);
}

static int start_reading(lstream *s) {
  int r;
  if (s->reading || s->rerr || s->h == NULL) return 0;
  r = uv_read_start(s->h, on_alloc, on_read);
  if (r == 0)
    s->reading = 1;
  else
    s->rerr = r;
  return r;
}

/* A buffer of any length: uv_buf_init takes an unsigned int and would cut 4 GiB and more short,
** while uv_buf_t's len is a size_t on Unix. */
static uv_buf_t mkbuf(const char *p, size_t n) {
  uv_buf_t b;
  b.base = (char *)p;
  b.len = n;
  return b;
}

typedef struct wreq {
  uv_write_t req;
  char data[1];
} wreq;

/* A task in write() waiting for the queue to drain below WRITE_LOW (its data is queued
** already, as with asyncio's drain). A userdata on the task's stack: anchored while it waits. */
struct wwaiter {
  lasync_op *op;
  lstream *s;
  wwaiter *next, *prev;
  int base;
};

/* Completes the ops of every waiting writer (status) and of a waiting close. As with
** wake_reader, the waiters stay linked until their deliver or cancel runs. */
static void wake_writers(lstream *s, int status, int all) {
  wwaiter *w;
  for (w = s->whead; w; w = w->next) lasync_op_complete(w->op, status);
  if (s->wop && all) lasync_op_complete(s->wop, status);
}

static void on_write(uv_write_t *req, int status) {
  lstream *s = (lstream *)req->handle->data;
  free(req);
  if (s == NULL) return;
  if (status < 0 && status != UV_ECANCELED && s->werr == 0) s->werr = status;
  if (s->werr || uv_stream_get_write_queue_size(s->h) <= WRITE_LOW)
    wake_writers(s, ST_OK, s->werr || uv_stream_get_write_queue_size(s->h) == 0);
}

/* Sends bufs[0..nb) in order (one writev when possible: separate small segments would meet
** Nagle's algorithm): what the kernel takes now, the rest copied into one queued request.
** Returns 0 or a uv error. */
static int write_bufs(lstream *s, uv_buf_t *bufs, unsigned nb) {
  size_t total = 0, skip = 0, k;
  unsigned i;
  wreq *w;
  uv_buf_t b;
  int r;
  for (i = 0; i < nb; i++) total += bufs[i].len;
  if (total == 0) return 0;
  if (uv_stream_get_write_queue_size(s->h) == 0) {
    r = uv_try_write(s->h, bufs, nb);
    if (r >= 0) {
      skip = (size_t)r;
      if (skip == total) return 0;
    } else if (r != UV_EAGAIN && r != UV_ENOSYS) {
      return r;
    }
  }
  w = (wreq *)malloc(sizeof *w + (total - skip));
  if (w == NULL) return UV_ENOMEM;
  for (i = 0, k = 0; i < nb; i++) {  /* copy what was not written */
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(w->data + k, bufs[i].base + skip, len - skip);
    k += len - skip;
    skip = 0;
  }
  b = mkbuf(w->data, k);
  r = uv_write(&w->req, s->h, &b, 1, on_write);
  if (r != 0) free(w);
  return r;
}

static int write_some(lstream *s, const char *p, size_t n) {
  uv_buf_t b = mkbuf(p, n);
  return write_bufs(s, &b, 1);
}

static void on_feed_shutdown(uv_shutdown_t *req, int status) {
  lstream *s = (lstream *)req->data;  /* NULL once the stream was closed */
  (void)status;
  if (s) s->feedreq = NULL;
  free(req);
}

int lasync__stream_feeding(lstream *s) {
  return s->feedreq != NULL;
}

int lasync__stream_feed(lstream *s, const char *data, size_t len) {
  uv_shutdown_t *req;
  int r = write_some(s, data, len);
  if (r != 0) return r;
  req = (uv_shutdown_t *)malloc(sizeof *req);
  if (req == NULL) return UV_ENOMEM;
  r = uv_shutdown(req, s->h, on_feed_shutdown);  /* after the queued writes */
  if (r != 0) {
    free(req);
    return r;
  }
  req->data = s;
  s->feedreq = req;
  s->shut = 1;
  return 0;
}

/* Closes the handle and wakes the tasks waiting on s with ST_CLOSED. No Lua. */
static void stream_detach(lstream *s) {
  if (s->feedreq) {
    s->feedreq->data = NULL;
    s->feedreq = NULL;
  }
  if (s->h) {
    s->h->data = NULL;  /* callbacks still to come (cancelled writes) only free their memory */
    uv_close((uv_handle_t *)s->h, lasync__free_handle);
    s->h = NULL;
  }
  s->reading = 0;
  free(s->buf);
  s->buf = NULL;
  s->off = s->len = s->cap = s->scanned = 0;
  wake_reader(s, ST_CLOSED);
  wake_writers(s, ST_CLOSED, 1);
}

/* {====== Lua API: streams ======} */

lstream *lasync__stream_wrap(lua_State *L, lasync__runtime *rt, uv_stream_t *h) {
  lstream *s = (lstream *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->rt = rt;
  s->h = h;
  s->tcp = h->type == UV_TCP;
  h->data = s;
  if (s->tcp) uv_tcp_nodelay((uv_tcp_t *)h, 1);  /* as asyncio and Node: no Nagle delays */
  lasync__setclass(L, rt, LASYNC_CLS_STREAM);
  return s;
}

static lstream *tostream(lua_State *L, int idx) {
  return (lstream *)lasync__checkclass(L, lasync__rt(L), idx, LASYNC_CLS_STREAM);
}

static lstream *checkstream(lua_State *L, int idx) {
  lstream *s = tostream(L, idx);
  if (s->h == NULL || s->closing) luaL_error(L, "attempt to use a closed stream");
  return s;
}

static int read_step(lua_State *L, lstream *s);

static int read_deliver(lua_State *L, void *data, int status) {
  lstream *s = (lstream *)data;
  s->rop = NULL;
  lua_settop(L, s->rbase);  /* drop the op */
  if (status == ST_CLOSED) return raise_closed(L, "read");
  return read_step(L, s);
}

static void read_cancel(void *data) {
  lstream *s = (lstream *)data;
  s->rop = NULL;
  s->want = 0;
}

static void consume(lstream *s, size_t n) {
  s->off += n;
  s->scanned = 0;
  s->want = 0;
  if (s->off == s->len) {
    s->off = s->len = 0;
    if (s->cap > 4 * READ_CHUNK) {  /* a big read is over: give the memory back */
      free(s->buf);
      s->buf = NULL;
      s->cap = 0;
    }
  }
  /* read ahead again: the Lua side consumes */
  if (!s->reading && !s->rerr && s->len - s->off < READ_HIGH) start_reading(s);
}

static int push_take(lua_State *L, lstream *s, size_t n) {
  if (n == 0)
    lua_pushliteral(L, "");
  else
    lua_pushlstring(L, s->buf + s->off, n);
  consume(s, n);
  return 1;
}

static int raise_eof(lua_State *L, lstream *s, const char *what, const char *msg) {
  size_t avail = s->len - s->off;
  lasync__push_error(L, "eof", "%s: %s", what, msg);
  lua_pushlstring(L, s->buf ? s->buf + s->off : "", avail);
  lua_setfield(L, -2, "partial");
  consume(s, avail);
  return lua_error(L);
}

/* Finds the separator in the unread bytes; returns its offset from off, or -1. */
static ptrdiff_t find_sep(lstream *s) {
  size_t avail = s->len - s->off, n = s->seplen;
  size_t from = s->scanned >= n ? s->scanned - n + 1 : 0;
  const char *base;
  if (avail < n) return -1;
  base = s->buf + s->off;
  while (from + n <= avail) {
    const char *q = (const char *)memchr(base + from, s->sep[0], avail - n + 1 - from);
    if (q == NULL) break;
    from = (size_t)(q - base);
    if (memcmp(q, s->sep, n) == 0) return (ptrdiff_t)from;
    from++;
  }
  s->scanned = avail;
  return -1;
}

/* Satisfies the pending read from the buffer, or raises, or suspends until more arrives. */
static int read_step(lua_State *L, lstream *s) {
  size_t avail = s->len - s->off;
  lasync_op *op;
  switch (s->rmode) {
    case RM_SOME:
      if (avail > 0) return push_take(L, s, s->rn > 0 && s->rn < avail ? s->rn : avail);
      if (s->rerr == UV_EOF) {
        lua_pushnil(L);
        return 1;
      }
      s->want = 1;
      break;
    case RM_EXACTLY:
      if (avail >= s->rn) return push_take(L, s, s->rn);
      if (s->rerr == UV_EOF) return raise_eof(L, s, "read_exactly", "the stream ended first");
      s->want = s->rn;
      break;
    case RM_ALL:
      if (s->rerr == UV_EOF) return push_take(L, s, avail);
      s->want = (size_t)-1;
      break;
    default: {  /* RM_UNTIL, RM_LINE */
      ptrdiff_t at = find_sep(s);
      /* max bounds the result: a line's CR does not count, and without a separator yet, the
      ** last seplen - 1 bytes (and a line's CR) may be the start of it */
      size_t slack = s->rmode == RM_LINE ? (avail > 0 && s->buf[s->len - 1] == '\r')
                                         : s->seplen - 1;
      if (at >= 0) {
        size_t n = (size_t)at, rlen = n;
        if (s->rmode == RM_LINE && n > 0 && s->buf[s->off + n - 1] == '\r') rlen = n - 1;
        if (rlen <= s->rn) {
          lua_pushlstring(L, s->buf + s->off, rlen);
          consume(s, n + s->seplen);
          return 1;
        }
        slack = 0;
        avail = rlen;  /* found, but too long */
      }
      if (avail > s->rn && avail - s->rn > slack) {  /* the data stays buffered */
        lasync__push_error(L, "limit", "%s: no separator within %d bytes",
                           s->rmode == RM_LINE ? "read_line" : "read_until", (int)s->rn);
        lua_pushinteger(L, (lua_Integer)s->rn);
        lua_setfield(L, -2, "max");
        return lua_error(L);
      }
      if (s->rerr == UV_EOF) {
        if (s->rmode == RM_UNTIL)
          return raise_eof(L, s, "read_until", "the stream ended before the separator");
        if (avail == 0) {
          lua_pushnil(L);
          return 1;
        }
        if (s->buf[s->len - 1] == '\r') avail--;  /* a last line without its \n */
        lua_pushlstring(L, s->buf + s->off, avail);
        consume(s, s->len - s->off);
        return 1;
      }
      s->want = avail + 1;
      break;
    }
  }
  if (s->rerr && s->rerr != UV_EOF) return lasync__stream_uverror(L, io_kind(s->rerr), s->rerr, "read");
  if (s->h == NULL) return raise_closed(L, "read");
  if (s->rop) luaL_error(L, "another task is already reading from this stream");
  if (start_reading(s) != 0) return lasync__stream_uverror(L, "network", s->rerr, "read");
  s->rbase = lua_gettop(L);
  op = lasync_op_new(L);
  s->rop = op;
  return lasync_op_await(L, op, s, read_deliver, read_cancel);
}

/* Checks that no other task reads s. */
static void begin_read(lua_State *L, lstream *s) {
  if (s->rop) luaL_error(L, "another task is already reading from this stream");
}

/* s:read([n]) -> up to n bytes (default: whatever is available), nil at EOF */
static int stream_read(lua_State *L) {
  lstream *s = checkstream(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, n >= 0, 2, "must be >= 0");
  begin_read(L, s);
  lua_settop(L, 1);
  s->rmode = RM_SOME;
  s->rn = (size_t)n;
  return read_step(L, s);
}

/* s:read_exactly(n) -> n bytes; raises kind "eof" with err.partial if the stream ends first */
static int stream_read_exactly(lua_State *L) {
  lstream *s = checkstream(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "must be >= 0");
  begin_read(L, s);
  lua_settop(L, 1);
  s->rmode = RM_EXACTLY;
  s->rn = (size_t)n;
  return read_step(L, s);
}

static size_t opt_max(lua_State *L, int idx) {
  lua_Number m;
  if (lua_isnoneornil(L, idx)) return DEFAULT_LINE_MAX;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "max");
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return DEFAULT_LINE_MAX;
    }
    if (!lua_isnumber(L, -1)) luaL_argerror(L, idx, "option 'max' must be a number");
    m = lua_tonumber(L, -1);
    lua_pop(L, 1);
  } else {
    m = luaL_checknumber(L, idx);
  }
  luaL_argcheck(L, m >= 1, idx, "option 'max' must be >= 1");
  return m >= 1e15 ? (size_t)1e15 : (size_t)m;
}

/* s:read_until(sep [, {max=}]) -> the bytes before sep (sep is consumed) */
static int stream_read_until(lua_State *L) {
  lstream *s = checkstream(L, 1);
  size_t n;
  const char *sep = luaL_checklstring(L, 2, &n);
  size_t max = opt_max(L, 3);
  luaL_argcheck(L, n > 0 && n <= MAX_SEP, 2, "separator must be 1 to 64 bytes long");
  lua_settop(L, 1);
  begin_read(L, s);
  memcpy(s->sep, sep, n);
  s->seplen = n;
  s->rmode = RM_UNTIL;
  s->rn = max;
  s->scanned = 0;
  return read_step(L, s);
}

static int read_line(lua_State *L, lstream *s, size_t max) {
  begin_read(L, s);
  s->sep[0] = '\n';
  s->seplen = 1;
  s->rmode = RM_LINE;
  s->rn = max;
  s->scanned = 0;
  return read_step(L, s);
}

/* s:read_line([{max=}]) -> the next line without its "\n" or "\r\n"; nil at EOF */
static int stream_read_line(lua_State *L) {
  lstream *s = checkstream(L, 1);
  size_t max = opt_max(L, 2);
  lua_settop(L, 1);
  return read_line(L, s, max);
}

static int lines_iter(lua_State *L) {
  lstream *s;
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  s = checkstream(L, 1);
  return read_line(L, s, (size_t)lua_tointeger(L, lua_upvalueindex(3)));
}

/* s:lines([{max=}]) -> an iterator over the lines (read_line until EOF) */
static int stream_lines(lua_State *L) {
  size_t max;
  checkstream(L, 1);
  max = opt_max(L, 2);
  lua_pushlightuserdata(L, lasync__rt(L));
  lua_pushvalue(L, 1);
  lua_pushinteger(L, (lua_Integer)max);
  lua_pushcclosure(L, lines_iter, 3);
  return 1;
}

/* s:read_all() -> every byte until EOF ("" if none) */
static int stream_read_all(lua_State *L) {
  lstream *s = checkstream(L, 1);
  begin_read(L, s);
  lua_settop(L, 1);
  s->rmode = RM_ALL;
  return read_step(L, s);
}

static void unlink_writer(wwaiter *w) {
  lstream *s = w->s;
  if (w->prev) w->prev->next = w->next; else s->whead = w->next;
  if (w->next) w->next->prev = w->prev; else s->wtail = w->prev;
  w->next = w->prev = NULL;
}

static int write_deliver(lua_State *L, void *data, int status) {
  wwaiter *w = (wwaiter *)data;
  lstream *s = w->s;
  unlink_writer(w);
  lua_settop(L, w->base);
  if (status == ST_CLOSED) return raise_closed(L, "write");
  if (s->werr) return lasync__stream_uverror(L, io_kind(s->werr), s->werr, "write");
  return 0;
}

static void write_cancel(void *data) {
  wwaiter *w = (wwaiter *)data;
  lstream *s = w->s;
  unlink_writer(w);
  /* part of the data may be queued: the byte stream is broken, later writes raise, and close
  ** does not wait for the queue (the peer may be the reason the write was stuck) */
  if (s->werr == 0) s->werr = UV_ECANCELED;
}

/* Suspends until the write queue is down to WRITE_LOW bytes; any number of tasks may wait. */
static int wait_drain(lua_State *L, lstream *s) {
  int base = lua_gettop(L);
  wwaiter *w = (wwaiter *)lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->s = s;
  w->base = base;
  w->op = lasync_op_new(L);
  w->prev = s->wtail;
  if (s->wtail) s->wtail->next = w; else s->whead = w;
  s->wtail = w;
  return lasync_op_await(L, w->op, w, write_deliver, write_cancel);
}

/* s:write(data, ...): queues the strings; suspends while the queue is above the high-water
** mark. Raises the error of an earlier failed write. */
static int stream_write(lua_State *L) {
  lstream *s = checkstream(L, 1);
  int i, n = lua_gettop(L);
  for (i = 2; i <= n; i++) luaL_checkstring(L, i);
  if (s->werr) return lasync__stream_uverror(L, io_kind(s->werr), s->werr, "write");
  if (s->shut) luaL_error(L, "write: the stream was shut down for writing");
  for (i = 2; i <= n; ) {  /* in batches of up to 16 strings, each batch one writev */
    uv_buf_t bufs[16];
    unsigned nb = 0;
    int r;
    for (; i <= n && nb < 16; i++) {
      size_t len;
      const char *p = lua_tolstring(L, i, &len);
      bufs[nb++] = mkbuf(p, len);
    }
    r = write_bufs(s, bufs, nb);
    if (r != 0) {
      s->werr = r;
      return lasync__stream_uverror(L, io_kind(r), r, "write");
    }
  }
  if (uv_stream_get_write_queue_size(s->h) <= WRITE_HIGH) return 0;
  lua_settop(L, 1);
  return wait_drain(L, s);
}

/* s:write_queue_size() -> bytes queued, not yet handed to the kernel */
static int stream_queued(lua_State *L) {
  lstream *s = checkstream(L, 1);
  lua_pushinteger(L, (lua_Integer)uv_stream_get_write_queue_size(s->h));
  return 1;
}

typedef struct sreq {
  lasync__req base;            /* must be first */
  uv_shutdown_t req;
  lstream *s;                  /* touched only by sreq_cancel, while the task holds it */
} sreq;

static void sreq_cancel(lasync__req *b) {
  sreq *r = (sreq *)b;
  if (r->s->werr == 0) r->s->werr = UV_ECANCELED;  /* as a cancelled write: close at once */
}

static const lasync__reqtype sreq_type = {sreq_cancel, NULL, 0};

static void on_shutdown(uv_shutdown_t *req, int status) {
  lasync__req_done(&lasync__container_of(req, sreq, req)->base, status);
}

static int shutdown_deliver(lua_State *L, void *data, int status) {
  sreq *r = (sreq *)data;
  int st = r->base.status;
  (void)status;
  lasync__req_free(&r->base);
  if (st == UV_ECANCELED) return raise_closed(L, "shutdown");  /* nothing more was flushed */
  if (st < 0 && st != UV_ENOTCONN)
    return lasync__stream_uverror(L, io_kind(st), st, "shutdown");
  return 0;
}

/* s:shutdown(): flushes the queued writes, then half-closes (the peer reads EOF). Reading
** goes on. A second call does nothing. */
static int stream_shutdown(lua_State *L) {
  lstream *s = checkstream(L, 1);
  sreq *r;
  int e;
  if (s->shut) return 0;
  (void)lasync__check_suspend(L, s->rt, "shutdown");
  if (s->werr) return lasync__stream_uverror(L, io_kind(s->werr), s->werr, "shutdown");
  lua_settop(L, 1);
  r = (sreq *)lasync__req_new(L, &sreq_type, sizeof *r);
  r->s = s;
  e = uv_shutdown(&r->req, s->h, on_shutdown);
  if (e != 0) {  /* not started */
    lasync__req_free(&r->base);
    if (e == UV_ENOTCONN) return 0;
    return lasync__stream_uverror(L, "network", e, "shutdown");
  }
  s->shut = 1;
  return lasync__req_await(L, &r->base, 0, shutdown_deliver);
}

static int close_deliver(lua_State *L, void *data, int status) {
  lstream *s = (lstream *)data;
  (void)L;
  (void)status;
  s->wop = NULL;
  stream_detach(s);
  return 0;
}

static void close_cancel(void *data) {
  lstream *s = (lstream *)data;
  s->wop = NULL;
  stream_detach(s);  /* cancelled while flushing: close at once */
}

/* s:close(): inside a task, first waits for queued writes to be handed to the kernel (bounded
** by the peer, like write), so that a write just before close is not lost; then closes. Tasks
** waiting on the stream get an error of kind "closed". Closing twice does nothing. */
static int stream_close(lua_State *L) {
  lstream *s = tostream(L, 1);
  lasync__runtime *rt = s->rt;
  lua_settop(L, 1);
  if (s->h && !s->werr && s->wop == NULL && uv_stream_get_write_queue_size(s->h) > 0 &&
      rt->current && L == rt->current->co && lua_isyieldable(L)) {
    lasync_op *op = lasync_op_new(L);
    stop_reading(s);
    wake_reader(s, ST_CLOSED);
    s->closing = 1;
    s->wop = op;
    return lasync_op_await(L, op, s, close_deliver, close_cancel);
  }
  stream_detach(s);
  return 0;
}

static int stream__gc(lua_State *L) {
  lstream *s = (lstream *)lua_touserdata(L, 1);
  stream_detach(s);
  return 0;
}

/* Pushes the path of a pipe's end, or nil for an unnamed one (a socketpair, the connecting
** side of a Unix socket). Not uv_pipe_get*name: it reads the path the kernel left unset. */
static int push_pipe_name(lua_State *L, lstream *s, int peer) {
  struct sockaddr_un sa;
  socklen_t len = sizeof sa;
  uv_os_fd_t fd;
  size_t off = offsetof(struct sockaddr_un, sun_path);
  memset(&sa, 0, sizeof sa);
  if (uv_fileno((uv_handle_t *)s->h, &fd) != 0 ||
      (peer ? getpeername(fd, (struct sockaddr *)&sa, &len)
            : getsockname(fd, (struct sockaddr *)&sa, &len)) != 0 ||
      sa.sun_family != AF_UNIX || len <= off || sa.sun_path[0] == '\0')
    lua_pushnil(L);
  else
    lua_pushlstring(L, sa.sun_path, strnlen(sa.sun_path, len - off));
  return 1;
}

/* s:peer() -> host, port (TCP) or path (Unix socket) of the other end */
static int stream_peer(lua_State *L) {
  lstream *s = checkstream(L, 1);
  if (s->tcp) {
    struct sockaddr_storage ss;
    int len = sizeof ss, r = uv_tcp_getpeername((uv_tcp_t *)s->h, (struct sockaddr *)&ss, &len);
    if (r != 0) return lasync__stream_uverror(L, "network", r, "peer");
    return push_addr(L, &ss);
  } else {
    return push_pipe_name(L, s, 1);
  }
}

/* s:sock() -> host, port (TCP) or path (Unix socket) of this end */
static int stream_sock(lua_State *L) {
  lstream *s = checkstream(L, 1);
  if (s->tcp) {
    struct sockaddr_storage ss;
    int len = sizeof ss, r = uv_tcp_getsockname((uv_tcp_t *)s->h, (struct sockaddr *)&ss, &len);
    if (r != 0) return lasync__stream_uverror(L, "network", r, "sock");
    return push_addr(L, &ss);
  } else {
    return push_pipe_name(L, s, 0);
  }
}

static lstream *checktcp(lua_State *L, const char *what) {
  lstream *s = checkstream(L, 1);
  if (!s->tcp) luaL_error(L, "%s: not a TCP stream", what);
  return s;
}

/* s:set_nodelay(bool) */
static int stream_set_nodelay(lua_State *L) {
  lstream *s = checktcp(L, "set_nodelay");
  int r;
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  r = uv_tcp_nodelay((uv_tcp_t *)s->h, lua_toboolean(L, 2));
  if (r != 0) return lasync__stream_uverror(L, "network", r, "set_nodelay");
  return 0;
}

/* s:set_keepalive(bool [, secs]) */
static int stream_set_keepalive(lua_State *L) {
  lstream *s = checktcp(L, "set_keepalive");
  lua_Integer secs = luaL_optinteger(L, 3, 60);
  int r;
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  luaL_argcheck(L, secs >= 1 && secs <= 0x7fffffff, 3, "must be >= 1");
  r = uv_tcp_keepalive((uv_tcp_t *)s->h, lua_toboolean(L, 2), (unsigned)secs);
  if (r != 0) return lasync__stream_uverror(L, "network", r, "set_keepalive");
  return 0;
}

/* s:closed() -> true once closed */
static int stream_is_closed(lua_State *L) {
  lua_pushboolean(L, tostream(L, 1)->h == NULL);
  return 1;
}

static int stream__tostring(lua_State *L) {
  lstream *s = tostream(L, 1);
  lua_pushfstring(L, "lasync.stream (%s%s): %p", s->tcp ? "tcp" : "pipe",
                  s->h ? "" : ", closed", (void *)s);
  return 1;
}

/* {====== connect ======} */

typedef struct creq {
  lasync__req base;            /* must be first */
  uv_connect_t req;
  uv_stream_t *h;              /* the handle being connected, until closed or taken */
} creq;

static void creq_cancel(lasync__req *b) {
  creq *c = (creq *)b;
  if (!b->done) {  /* closing the handle makes libuv call on_connect with UV_ECANCELED */
    uv_close((uv_handle_t *)c->h, lasync__free_handle);
    c->h = NULL;
  }
}

static void creq_release(lasync__req *b, int taken) {
  creq *c = (creq *)b;
  (void)taken;  /* the deliver function takes the handle (c->h = NULL) */
  if (c->h) uv_close((uv_handle_t *)c->h, lasync__free_handle);  /* connected, not taken */
}

static const lasync__reqtype creq_type = {creq_cancel, creq_release, 0};

static void on_connect(uv_connect_t *req, int status) {
  lasync__req_done(&lasync__container_of(req, creq, req)->base, status);
}

static int connect_deliver(lua_State *L, void *data, int status) {
  creq *c = (creq *)data;
  lasync__runtime *rt = c->base.rt;
  uv_stream_t *h = c->h;
  int st = c->base.status;
  (void)status;
  c->h = NULL;
  lasync__req_free(&c->base);
  if (st != 0) {
    uv_close((uv_handle_t *)h, lasync__free_handle);
    return lasync__stream_uverror(L, st == UV_ETIMEDOUT ? "timeout" : "connect", st, "connect");
  }
  lasync__stream_wrap(L, rt, h);
  return 1;
}

/* A new connect request with a malloc'd, uninitialized handle of `size` bytes in c->h; pushes
** its op. [-0, +1, e] */
static creq *new_connect(lua_State *L, size_t size) {
  creq *c = (creq *)lasync__req_new(L, &creq_type, sizeof *c);
  c->h = (uv_stream_t *)malloc(size);
  if (c->h == NULL) {
    lasync__req_free(&c->base);
    luaL_error(L, "not enough memory");
    return NULL;  /* not reached */
  }
  return c;
}

/* core.tcp_connect(ip, port) -> Stream; ip is a numeric IPv4 or IPv6 address */
static int core_tcp_connect(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *ip = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  struct sockaddr_storage ss;
  creq *c;
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port must be 0-65535");
  if (lasync__parse_addr(ip, (int)port, &ss) != 0) luaL_argerror(L, 1, "not a numeric IP address");
  c = new_connect(L, sizeof(uv_tcp_t));
  uv_tcp_init(rt->loop, (uv_tcp_t *)c->h);
  return lasync__req_await(L, &c->base, uv_tcp_connect(&c->req, (uv_tcp_t *)c->h,
                                                       (struct sockaddr *)&ss, on_connect),
                           connect_deliver);
}

/* libuv 1.44 silently truncates a socket path that does not fit in sun_path. */
static const char *check_sockpath(lua_State *L, int idx) {
  struct sockaddr_un sa;
  size_t len;
  const char *path = luaL_checklstring(L, idx, &len);
  luaL_argcheck(L, len > 0 && len < sizeof sa.sun_path, idx,
                lua_pushfstring(L, "a Unix socket path must be 1 to %d bytes long",
                                (int)sizeof sa.sun_path - 1));
  return path;
}

/* core.pipe_connect(path) -> Stream */
static int core_pipe_connect(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = check_sockpath(L, 1);
  creq *c = new_connect(L, sizeof(uv_pipe_t));
  uv_pipe_init(rt->loop, (uv_pipe_t *)c->h, 0);
  uv_pipe_connect(&c->req, (uv_pipe_t *)c->h, path, on_connect);  /* errors come to on_connect */
  return lasync__req_await(L, &c->base, 0, connect_deliver);
}

/* {====== listeners ======} */

static void on_connection(uv_stream_t *server, int status) {
  llistener *l = (llistener *)server->data;
  if (l == NULL) return;
  if (status < 0)
    l->err = status;
  else
    l->pending++;
  if (l->aop) lasync_op_complete(l->aop, ST_OK);  /* aop is cleared by its deliver or cancel */
}

static llistener *tolistener(lua_State *L, int idx) {
  return (llistener *)lasync__checkclass(L, lasync__rt(L), idx, LASYNC_CLS_LISTENER);
}

static llistener *checklistener(lua_State *L, int idx) {
  llistener *l = tolistener(L, idx);
  if (l->h == NULL) luaL_error(L, "attempt to use a closed server");
  return l;
}

static void listener_detach(llistener *l) {
  if (l->h) {
    l->h->data = NULL;
    uv_close((uv_handle_t *)l->h, lasync__free_handle);
    l->h = NULL;
  }
  if (l->path) {
    unlink(l->path);
    free(l->path);
    l->path = NULL;
  }
  if (l->aop) lasync_op_complete(l->aop, ST_CLOSED);
}

static int accept_step(lua_State *L, llistener *l);

static int accept_deliver(lua_State *L, void *data, int status) {
  llistener *l = (llistener *)data;
  l->aop = NULL;
  lua_settop(L, l->abase);
  if (status == ST_CLOSED) {
    lasync__push_error(L, "closed", "accept: the server was closed");
    return lua_error(L);
  }
  return accept_step(L, l);
}

static void accept_cancel(void *data) {
  ((llistener *)data)->aop = NULL;
}

static int accept_step(lua_State *L, llistener *l) {
  lasync_op *op;
  if (l->h == NULL) {
    lasync__push_error(L, "closed", "accept: the server was closed");
    return lua_error(L);
  }
  while (l->pending > 0) {
    uv_stream_t *c;
    int r;
    l->pending--;
    c = l->tcp ? (uv_stream_t *)malloc(sizeof(uv_tcp_t)) : (uv_stream_t *)malloc(sizeof(uv_pipe_t));
    if (c == NULL) return luaL_error(L, "not enough memory");
    if (l->tcp)
      uv_tcp_init(l->rt->loop, (uv_tcp_t *)c);
    else
      uv_pipe_init(l->rt->loop, (uv_pipe_t *)c, 0);
    r = uv_accept(l->h, c);
    if (r == 0) {
      lasync__stream_wrap(L, l->rt, c);
      return 1;
    }
    uv_close((uv_handle_t *)c, lasync__free_handle);
    if (r != UV_EAGAIN) return lasync__stream_uverror(L, "network", r, "accept");
  }
  if (l->err) {
    int e = l->err;
    l->err = 0;
    return lasync__stream_uverror(L, "network", e, "accept");
  }
  if (l->aop) luaL_error(L, "another task is already accepting on this server");
  l->abase = lua_gettop(L);
  op = lasync_op_new(L);
  l->aop = op;
  return lasync_op_await(L, op, l, accept_deliver, accept_cancel);
}

/* listener:accept() -> Stream; raises kind "closed" once the listener is closed */
static int listener_accept(lua_State *L) {
  llistener *l = tolistener(L, 1);
  lua_settop(L, 1);
  return accept_step(L, l);
}

/* listener:close(): stops listening; a task in accept gets kind "closed" */
static int listener_close(lua_State *L) {
  listener_detach(tolistener(L, 1));
  return 0;
}

static int listener__gc(lua_State *L) {
  listener_detach((llistener *)lua_touserdata(L, 1));
  return 0;
}

/* listener:sock() -> host, port (TCP) or path */
static int listener_sock(lua_State *L) {
  llistener *l = checklistener(L, 1);
  if (l->tcp) {
    struct sockaddr_storage ss;
    int len = sizeof ss, r = uv_tcp_getsockname((uv_tcp_t *)l->h, (struct sockaddr *)&ss, &len);
    if (r != 0) return lasync__stream_uverror(L, "network", r, "sock");
    return push_addr(L, &ss);
  }
  lua_pushstring(L, l->path ? l->path : "");
  return 1;
}

static llistener *new_listener(lua_State *L, lasync__runtime *rt) {
  llistener *l = (llistener *)lua_newuserdatauv(L, sizeof *l, 0);
  memset(l, 0, sizeof *l);
  l->rt = rt;
  lasync__setclass(L, rt, LASYNC_CLS_LISTENER);
  return l;
}

static int start_listen(lua_State *L, llistener *l, int backlog, const char *what) {
  int r = uv_listen(l->h, backlog, on_connection);
  if (r != 0) {
    listener_detach(l);
    return lasync__stream_uverror(L, "network", r, what);
  }
  return 1;
}

static int check_backlog(lua_State *L, int idx) {
  lua_Integer b = luaL_optinteger(L, idx, 511);
  luaL_argcheck(L, b >= 1 && b <= 65535, idx, "backlog must be 1-65535");
  return (int)b;
}

/* core.tcp_listen(ip, port [, backlog]) -> listener */
static int core_tcp_listen(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *ip = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  int backlog = check_backlog(L, 3), r;
  struct sockaddr_storage ss;
  llistener *l;
  uv_tcp_t *h;
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port must be 0-65535");
  if (lasync__parse_addr(ip, (int)port, &ss) != 0) luaL_argerror(L, 1, "not a numeric IP address");
  l = new_listener(L, rt);
  l->tcp = 1;
  h = (uv_tcp_t *)malloc(sizeof *h);
  if (h == NULL) return luaL_error(L, "not enough memory");
  uv_tcp_init(rt->loop, h);
  h->data = l;
  l->h = (uv_stream_t *)h;
  r = uv_tcp_bind(h, (struct sockaddr *)&ss, 0);
  if (r != 0) {
    listener_detach(l);
    return lasync__stream_uverror(L, "network", r, "bind");
  }
  return start_listen(L, l, backlog, "listen");
}

/* core.pipe_listen(path [, backlog]) -> listener; a stale socket file at path is replaced,
** and the file is removed when the listener closes */
static int core_pipe_listen(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = check_sockpath(L, 1);
  int backlog = check_backlog(L, 2), r;
  struct stat st;
  llistener *l;
  uv_pipe_t *h;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
  l = new_listener(L, rt);
  h = (uv_pipe_t *)malloc(sizeof *h);
  if (h == NULL) return luaL_error(L, "not enough memory");
  uv_pipe_init(rt->loop, h, 0);
  h->data = l;
  l->h = (uv_stream_t *)h;
  r = uv_pipe_bind(h, path);
  if (r != 0) {
    listener_detach(l);
    return lasync__stream_uverror(L, "network", r, "bind");
  }
  l->path = strdup(path);
  return start_listen(L, l, backlog, "listen");
}

/* core.isatty(fd) -> whether the descriptor fd (0 stdin, 1 stdout, 2 stderr, ...) is a terminal */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  lua_pushboolean(L, fd >= 0 && fd <= 0x7fffffff && uv_guess_handle((uv_file)fd) == UV_TTY);
  return 1;
}

void lasync__open_stream(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg stream_methods[] = {
    {"read", stream_read}, {"read_exactly", stream_read_exactly},
    {"read_until", stream_read_until}, {"read_line", stream_read_line},
    {"lines", stream_lines}, {"read_all", stream_read_all}, {"write", stream_write},
    {"shutdown", stream_shutdown}, {"close", stream_close}, {"peer", stream_peer},
    {"sock", stream_sock}, {"set_nodelay", stream_set_nodelay},
    {"set_keepalive", stream_set_keepalive}, {"closed", stream_is_closed},
    {"write_queue_size", stream_queued}, {NULL, NULL}
  };
  static const luaL_Reg stream_meta[] = {
    {"__gc", stream__gc}, {"__close", stream_close}, {"__tostring", stream__tostring},
    {NULL, NULL}
  };
  static const luaL_Reg listener_methods[] = {
    {"accept", listener_accept}, {"close", listener_close}, {"sock", listener_sock},
    {NULL, NULL}
  };
  static const luaL_Reg listener_meta[] = {
    {"__gc", listener__gc}, {"__close", listener_close}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"tcp_connect", core_tcp_connect}, {"pipe_connect", core_pipe_connect},
    {"tcp_listen", core_tcp_listen}, {"isatty", core_isatty},
    {"pipe_listen", core_pipe_listen}, {NULL, NULL}
  };
  struct sigaction sa;
  /* A write to a closed socket or pipe must fail with EPIPE, not kill the process (as in
  ** Python and Node); a host that set its own SIGPIPE disposition keeps it. */
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_STREAM, LASYNC_STREAM_MT, stream_methods, stream_meta);
  lasync__newclass(L, rt, LASYNC_CLS_LISTENER, LASYNC_LISTENER_MT, listener_methods,
                   listener_meta);
  luaL_setfuncs(L, funcs, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->mtref[LASYNC_CLS_STREAM]);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "stream_methods");  /* lasync.stream checks the options of some */
  lua_pop(L, 1);
}
