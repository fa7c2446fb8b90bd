/*
** http.c: libcurl's multi interface driven by the runtime's libuv loop.
**
** The driver (first half) never sees a lua_State: curl's socket callback only starts or stops a
** uv_poll per socket (bound with curl_multi_assign), its timer callback only re-arms a uv_timer,
** and curl_multi_socket_action / curl_multi_info_read run from those libuv callbacks, never
** from curl's. A finished or progressing transfer only completes the lasync_op its task waits
** on. The Lua API (second half) starts transfers and lets tasks wait for headers, body data or
** the end; the Lua layer (lua/lasync/http.lua) builds requests and responses on top.
*/
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include "internal.h"

#define LASYNC_HTTP_MULTI_MT "lasync.http.multi"  /* also in error.c's class names */
#define LASYNC_HTTP_REQUEST_MT "lasync.http.request"
#define HIGH_WATER (1 << 20)   /* buffered body bytes before the transfer is paused */
#define IDLE_EASY_MAX 256      /* finished easy handles a client keeps for reuse */
#define IDLE_CONN_MAX 256L     /* idle connections a client keeps (without max_connections) */
#define IDLE_BUF_MAX 128       /* body and header buffers a client keeps for reuse ... */
#define IDLE_BUF_SIZE 65536    /* ... if they are not larger than this */

typedef struct sockctx sockctx;

typedef struct hmulti {
  lasync__runtime *rt;
  CURLM *multi;
  CURLSH *share;
  uv_timer_t *timer;           /* malloc'd; freed in its close callback */
  sockctx *socks;              /* poll contexts still open */
  sockctx **byfd;              /* the same, by socket: they outlive curl's interest in them */
  int nbyfd;
  CURL *idle[IDLE_EASY_MAX];   /* finished easy handles, reused by new requests */
  unsigned char idlekind[IDLE_EASY_MAX];  /* their PLAIN_* configuration */
  int nidle;
  char *bufs[IDLE_BUF_MAX];    /* buffers of closed requests, reused by new ones */
  size_t bufcap[IDLE_BUF_MAX];
  int nbufs;
  int inflight;                /* easy handles in the multi */
  int in_timer;                /* inside on_timer's curl_multi_socket_action */
  int closed;
} hmulti;

/* A socket's poll handle lives as long as the socket, not just while curl watches it: a
** keep-alive connection goes back to curl's pool after each transfer (CURL_POLL_REMOVE) and is
** watched again by the next one. Keeping the handle, and leaving it polling for input while the
** connection is idle, spares two epoll_ctl calls and a handle per request; curl's close-socket
** callback ends it (before the socket is closed, as libuv requires). */
struct sockctx {
  uv_poll_t poll;              /* must be first: freed in the close callback */
  curl_socket_t fd;
  int events;                  /* what the poll handle watches now (UV_READABLE, ...) */
  int wanted;                  /* what curl asked to watch; 0 after CURL_POLL_REMOVE */
  hmulti *hm;
  sockctx *next, **pprev;
};

enum { WAIT_NONE, WAIT_HEADERS, WAIT_DATA, WAIT_DONE, WAIT_NEED };

typedef struct hreq {
  hmulti *hm;
  CURL *easy;
  struct curl_slist *headers;
  lasync_op *op;               /* the waiting task's op (&opmem), while one waits */
  lasync_op opmem;             /* the waiting call holds r on its stack: no op userdata */
  int waiting;
  int ref;                     /* anchors the userdata while curl may call back into it */
  char *body;                  /* received, not yet read: body[off..len) */
  size_t len, off, cap;
  char *hdr;                   /* the header block of the latest response */
  size_t hlen, hcap;
  long status;
  int in_multi, done, headers_done, paused, stream, follow, aborted, read_timed_out;
  int waited;                  /* what the last wait was for (WAIT_*) */
  int kind;                    /* PLAIN_*: the easy handle's options are the plain GET's */
  CURLcode result;
  uv_timer_t *idle;            /* read_timeout: malloc'd, freed in its close callback */
  uint64_t idle_ms;
  char *up;                    /* a streamed upload: fed, not yet sent: up[uoff..ulen) */
  size_t ulen, uoff, ucap;
  int ustream, ueof, upaused;  /* upload streamed from Lua; its end was fed; curl waits */
  char errbuf[CURL_ERROR_SIZE];
} hreq;

/* User values of a request: the body string curl reads, and the client it runs on. */
#define REQ_UV_BODY 1
#define REQ_UV_MULTI 2

/* {====== the driver: no Lua below this line until the Lua API fence ======} */

/* Wakes the task waiting on r if what it waits for happened. */
static void notify(hreq *r) {
  lasync_op *op = r->op;
  int ready;
  if (op == NULL) return;
  switch (r->waiting) {
    case WAIT_HEADERS: ready = r->headers_done || r->done; break;
    case WAIT_DATA: ready = r->len > r->off || r->done; break;
    case WAIT_NEED: ready = r->upaused || r->done; break;
    default: ready = r->done; break;
  }
  if (!ready) return;
  r->op = NULL;
  r->waiting = WAIT_NONE;
  lasync_op_complete(op, 0);
}

static void stop_idle(hreq *r) {
  if (r->idle) uv_timer_stop(r->idle);
}

static void finish(hreq *r, CURLcode result) {
  hmulti *hm = r->hm;
  if (r->in_multi) {
    curl_multi_remove_handle(hm->multi, r->easy);  /* never from inside curl's callbacks */
    r->in_multi = 0;
    hm->inflight--;
  }
  stop_idle(r);
  r->done = 1;
  r->result = result;
  if (r->status == 0) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
  notify(r);
}

static void check_done(hmulti *hm) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(hm->multi, &left)) != NULL) {
    if (msg->msg == CURLMSG_DONE) {
      hreq *r = NULL;
      CURLcode result = msg->data.result;  /* read before the handle leaves the multi */
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      if (r) finish(r, result);
    }
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sockctx *c = (sockctx *)h;
  int flags = 0, running;
  if (c->wanted == 0) {  /* an idle pooled connection: the server closed it, or talks out of
                         ** turn; curl finds out when it next uses it, stop watching till then */
    uv_poll_stop(&c->poll);
    c->events = 0;
    return;
  }
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(c->hm->multi, c->fd, flags, &running);
  check_done(c->hm);
}

static void on_timer(uv_timer_t *h) {
  hmulti *hm = (hmulti *)h->data;
  int running;
  hm->in_timer = 1;
  curl_multi_socket_action(hm->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  hm->in_timer = 0;
  check_done(hm);
}

static void close_sock(sockctx *c) {
  hmulti *hm = c->hm;
  uv_poll_stop(&c->poll);
  *c->pprev = c->next;
  if (c->next) c->next->pprev = c->pprev;
  if (c->fd >= 0 && c->fd < hm->nbyfd && hm->byfd[c->fd] == c) hm->byfd[c->fd] = NULL;
  uv_close((uv_handle_t *)&c->poll, lasync__free_handle);
}

static sockctx *find_sock(hmulti *hm, curl_socket_t s) {
  return (s >= 0 && s < hm->nbyfd) ? hm->byfd[s] : NULL;
}

static sockctx *new_sock(hmulti *hm, curl_socket_t s) {
  sockctx *c;
  if (s < 0) return NULL;
  if (s >= hm->nbyfd) {
    int n = hm->nbyfd ? hm->nbyfd : 64;
    sockctx **t;
    while (n <= s) n *= 2;
    t = (sockctx **)realloc(hm->byfd, (size_t)n * sizeof *t);
    if (t == NULL) return NULL;
    memset(t + hm->nbyfd, 0, (size_t)(n - hm->nbyfd) * sizeof *t);
    hm->byfd = t;
    hm->nbyfd = n;
  }
  c = (sockctx *)malloc(sizeof *c);
  if (c == NULL) return NULL;
  if (uv_poll_init_socket(hm->rt->loop, &c->poll, s) != 0) {
    free(c);
    return NULL;
  }
  c->fd = s;
  c->hm = hm;
  c->events = c->wanted = 0;
  c->next = hm->socks;
  if (c->next) c->next->pprev = &c->next;
  c->pprev = &hm->socks;
  hm->socks = c;
  hm->byfd[s] = c;
  return c;
}

/* CURLMOPT_SOCKETFUNCTION: starts, changes or pauses the socket's poll handle (see sockctx).
** Calls no curl function but curl_multi_assign. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  hmulti *hm = (hmulti *)userp;
  sockctx *c = (sockctx *)socketp;
  int events = 0;
  (void)e;
  if (c == NULL) c = find_sock(hm, s);
  if (what == CURL_POLL_REMOVE) {
    if (c) {
      c->wanted = 0;  /* an idle connection: its poll stays, watching for input, see on_poll */
      if (c->events & UV_WRITABLE) {
        uv_poll_stop(&c->poll);
        c->events = 0;
      }
      uv_unref((uv_handle_t *)&c->poll);  /* an idle connection does not keep the loop alive */
    }
    return 0;
  }
  if (c == NULL) {
    c = new_sock(hm, s);
    if (c == NULL) return -1;
  }
  curl_multi_assign(hm->multi, s, c);
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  c->wanted = events;
  uv_ref((uv_handle_t *)&c->poll);
  if (events != c->events) {  /* uv_poll_start always re-registers the socket: only on change */
    uv_poll_start(&c->poll, events, on_poll);
    c->events = events;
  }
  return 0;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the socket's poll handle goes first (libuv must not poll a
** closed descriptor), then the socket. */
static int on_closesocket(void *userp, curl_socket_t s) {
  hmulti *hm = (hmulti *)userp;
  sockctx *c = find_sock(hm, s);
  if (c) close_sock(c);
  return close(s);
}

/* CURLMOPT_TIMERFUNCTION: only re-arms the uv_timer (curl must not be called from here).
** "Now" is a 0 ms timer, except when curl asks from inside our own timer callback: below libuv
** 1.48 such a timer runs again in the same pass (LASYNC_ZERO_TIMER_MS). Anywhere else a
** 1 ms floor would delay every new transfer by a millisecond. */
static int on_curl_timer(CURLM *m, long timeout_ms, void *userp) {
  hmulti *hm = (hmulti *)userp;
  uint64_t ms = (uint64_t)timeout_ms;
  (void)m;
  if (timeout_ms < 0) {
    uv_timer_stop(hm->timer);
    return 0;
  }
  if (timeout_ms == 0 && hm->in_timer) ms = LASYNC_ZERO_TIMER_MS;
  uv_timer_start(hm->timer, on_timer, ms, 0);
  return 0;
}

static void on_idle(uv_timer_t *h) {  /* read_timeout: no byte for idle_ms */
  hreq *r = (hreq *)h->data;
  if (r->done) return;
  r->read_timed_out = 1;
  finish(r, CURLE_OPERATION_TIMEDOUT);
}

/* (Re)starts the read timeout from now; +1 ms because libuv counts in whole, cached
** milliseconds, and the timeout must never fire before the limit. */
static void restart_idle(hreq *r) {
  if (r->idle && !r->done) {
    uv_update_time(r->hm->rt->loop);
    uv_timer_start(r->idle, on_idle, r->idle_ms + 1, 0);
  }
}

static int grow(char **p, size_t *cap, size_t need) {
  size_t n = *cap ? *cap : 4096;
  char *q;
  if (need <= *cap) return 1;
  while (n < need) n *= 2;
  q = (char *)realloc(*p, n);
  if (q == NULL) return 0;
  *p = q;
  *cap = n;
  return 1;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp) {
  hreq *r = (hreq *)userp;
  size_t len = size * n;
  restart_idle(r);
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {  /* a new response: forget the last one */
    r->hlen = 0;
    r->headers_done = 0;
  }
  if (len <= 2 && (data[0] == '\r' || data[0] == '\n')) {  /* end of this response's headers */
    long code = 0;
    char *location = NULL;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &location);
    if (code >= 200 && !(r->follow && code >= 300 && code < 400 && location)) {
      r->status = code;
      r->headers_done = 1;
      notify(r);
    }
    return len;
  }
  if (!grow(&r->hdr, &r->hcap, r->hlen + len)) return 0;
  memcpy(r->hdr + r->hlen, data, len);
  r->hlen += len;
  return len;
}

/* CURLOPT_READFUNCTION for a streamed upload: hands curl what the task fed; when nothing is
** left (and the end was not fed) it pauses the upload and wakes the task to feed more. */
static size_t on_read(char *buf, size_t size, size_t n, void *userp) {
  hreq *r = (hreq *)userp;
  size_t len = size * n, left = r->ulen - r->uoff;
  if (left == 0) {
    if (r->ueof) return 0;
    r->upaused = 1;
    notify(r);
    return CURL_READFUNC_PAUSE;
  }
  if (len > left) len = left;
  memcpy(buf, r->up + r->uoff, len);
  r->uoff += len;
  if (r->uoff == r->ulen) r->uoff = r->ulen = 0;
  return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *userp) {
  hreq *r = (hreq *)userp;
  size_t len = size * n;
  restart_idle(r);
  if (r->stream && r->len - r->off >= HIGH_WATER) {  /* the reader is behind: pause */
    r->paused = 1;
    stop_idle(r);  /* a slow reader is not a silent server: no read timeout while paused */
    return CURL_WRITEFUNC_PAUSE;
  }
  if (r->off > 0 && r->off == r->len) r->off = r->len = 0;
  if (!grow(&r->body, &r->cap, r->len + len)) return 0;
  memcpy(r->body + r->len, data, len);
  r->len += len;
  if (!r->headers_done) {  /* a body without a header block (HTTP/0.9-like): headers are done */
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    r->headers_done = 1;
  }
  notify(r);
  return len;
}

/* {====== Lua API ======} */

/* A plain request (a GET of a URL with every option at its default: most of a fan-out) leaves
** its easy handle configured for the next plain request of the same scheme, which then only
** sets its URL and its own pointers. Anything else starts from curl_easy_reset. */
enum { PLAIN_NO = 0, PLAIN_HTTP, PLAIN_HTTPS };

/* An easy handle for a new request of the given PLAIN_* kind: a finished one (curl keeps
** connections in the multi, not in it), as it is if it was configured for that kind (*ready
** = 1), else reset; or a new one. */
static CURL *take_easy(hmulti *hm, int kind, int *ready) {
  *ready = 0;
  if (hm->nidle > 0) {
    CURL *e = hm->idle[--hm->nidle];
    if (kind != PLAIN_NO && hm->idlekind[hm->nidle] == kind)
      *ready = 1;
    else
      curl_easy_reset(e);
    return e;
  }
  return curl_easy_init();
}

/* The request r is over and closed: its easy handle goes back to its client, or away. */
static void give_back_easy(hreq *r) {
  hmulti *hm = r->hm;
  CURL *e = r->easy;
  if (e == NULL || r->in_multi) return;
  r->easy = NULL;
  if (!hm->closed && hm->nidle < IDLE_EASY_MAX) {
    hm->idlekind[hm->nidle] = (unsigned char)r->kind;
    hm->idle[hm->nidle++] = e;
  }
  else
    curl_easy_cleanup(e);
}

/* A buffer of a closed request goes back to its client, or away. */
static void give_back_buf(hmulti *hm, char **p, size_t *cap) {
  if (*p != NULL && !hm->closed && hm->nbufs < IDLE_BUF_MAX && *cap <= IDLE_BUF_SIZE) {
    hm->bufs[hm->nbufs] = *p;
    hm->bufcap[hm->nbufs++] = *cap;
  } else {
    free(*p);
  }
  *p = NULL;
  *cap = 0;
}

static void take_buf(hmulti *hm, char **p, size_t *cap) {
  if (hm->nbufs > 0) {
    *p = hm->bufs[--hm->nbufs];
    *cap = hm->bufcap[hm->nbufs];
  }
}

static hmulti *checkmulti(lua_State *L, int idx) {
  hmulti *hm = (hmulti *)lasync__checkclass(L, lasync__rt(L), idx, LASYNC_CLS_HTTP_MULTI);
  if (hm->closed) luaL_error(L, "attempt to use a closed HTTP client");
  return hm;
}

static hreq *checkreq(lua_State *L, int idx) {
  return (hreq *)lasync__checkclass(L, lasync__rt(L), idx, LASYNC_CLS_HTTP_REQUEST);
}

static const char *kind_of(CURLcode c, int read_timed_out, const char **phase) {
  *phase = NULL;
  switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
      *phase = read_timed_out ? "read" : "total";
      return "timeout";
    case CURLE_COULDNT_CONNECT: return "connect";
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: case CURLE_SSL_CRL_BADFILE:
      return "tls";
    case CURLE_TOO_MANY_REDIRECTS: return "too_many_redirects";
    case CURLE_WEIRD_SERVER_REPLY: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING: case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return "protocol";
    default: return "network";
  }
}

/* Raises the transfer's error as an error object {kind, message, url, phase, code}. */
static int raise_transfer(lua_State *L, hreq *r) {
  const char *phase, *kind = kind_of(r->result, r->read_timed_out, &phase);
  const char *url = NULL;
  const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result);
  if (r->easy) curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
  if (r->result == CURLE_OPERATION_TIMEDOUT && r->easy) {
    curl_off_t pretransfer = 0;  /* 0: the request was never sent (DNS, connect, TLS) */
    curl_easy_getinfo(r->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    if (!r->read_timed_out && pretransfer == 0) phase = "connect";
    if (r->read_timed_out) msg = "no data received within the read timeout";
  }
  if (r->aborted) msg = "the transfer was aborted: its task was cancelled, or it was closed";
  lasync__push_error(L, kind, "%s (%s)", msg, url ? url : "?");
  lua_pushstring(L, url ? url : "");
  lua_setfield(L, -2, "url");
  lua_pushinteger(L, (lua_Integer)r->result);
  lua_setfield(L, -2, "code");
  if (phase) {
    lua_pushstring(L, phase);
    lua_setfield(L, -2, "phase");
  }
  return lua_error(L);
}

static void release_ref(lua_State *L, hreq *r) {
  if (r->ref != LUA_NOREF && r->done && !r->in_multi) {
    luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
    r->ref = LUA_NOREF;
  }
}

/* lasync_op cancel: the waiting task was cancelled; abort the transfer (no Lua here). */
static void abort_transfer(hreq *r) {
  r->len = r->off = 0;  /* nothing more is delivered, not even what was buffered */
  if (!r->done) {
    r->aborted = 1;
    finish(r, CURLE_ABORTED_BY_CALLBACK);
  }
}

static void on_cancel(void *data) {
  hreq *r = (hreq *)data;
  r->op = NULL;
  r->waiting = WAIT_NONE;
  abort_transfer(r);
}

/* Whether a failed transfer must raise for a wait on `what`: not while data read before the
** failure (or the headers it came with) can still be handed out. */
static int must_raise(hreq *r, int what) {
  if (!r->done || r->result == CURLE_OK) return 0;
  if (what == WAIT_DATA && r->len > r->off) return 0;
  if (what == WAIT_HEADERS && r->headers_done) return 0;
  return 1;
}

static int on_deliver(lua_State *L, void *data, int status) {
  hreq *r = (hreq *)data;
  (void)status;
  if (must_raise(r, r->waited)) return raise_transfer(L, r);
  return 0;
}

/* Suspends the running task until `what` holds for r. */
static int wait_for(lua_State *L, hreq *r, int what) {
  lasync__runtime *rt = r->hm->rt;
  (void)lasync__check_suspend(L, rt, "an HTTP request");
  r->waiting = r->waited = what;
  lasync__op_init(&r->opmem, rt);
  r->op = &r->opmem;
  return lasync_op_await(L, &r->opmem, r, on_deliver, on_cancel);
}

static int resume_paused(hreq *r) {
  if (r->paused && !r->done) {
    r->paused = 0;
    restart_idle(r);
    curl_easy_pause(r->easy, CURLPAUSE_CONT);  /* from a task, never from curl's callbacks */
  }
  return 0;
}

/* req:headers_ready() -> true when the final headers arrived (or the transfer ended) */
static int req_headers_ready(lua_State *L) {
  hreq *r = checkreq(L, 1);
  lua_pushboolean(L, r->headers_done || r->done);
  return 1;
}

/* req:wait(what): what = "headers" | "data" | "done" | "need" (a streamed upload needs more).
** Suspends until it holds. Raises the transfer's error once the transfer failed (but only
** after the data before it was read). */
static int req_wait(lua_State *L) {
  static const char *const whats[] = {"none", "headers", "data", "done", "need", NULL};
  hreq *r = checkreq(L, 1);
  int what = luaL_checkoption(L, 2, NULL, whats);
  int ready;
  switch (what) {
    case WAIT_HEADERS: ready = r->headers_done || r->done; break;
    case WAIT_DATA: ready = r->len > r->off || r->done; break;
    case WAIT_NEED: ready = r->upaused || r->done; break;
    default: ready = r->done; break;
  }
  if (ready) return must_raise(r, what) ? raise_transfer(L, r) : 0;
  if (r->op) luaL_error(L, "another task is already waiting on this HTTP response");
  lua_settop(L, 1);
  return wait_for(L, r, what);
}

/* req:feed(chunk | nil): adds a chunk to a streamed upload (nil: its end) and lets a waiting
** upload go on. */
static int req_feed(lua_State *L) {
  hreq *r = checkreq(L, 1);
  size_t n = 0;
  const char *chunk = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &n);
  if (!r->ustream) luaL_error(L, "feed: this request does not stream its body");
  if (r->ueof) luaL_error(L, "feed: the body already ended");
  if (chunk == NULL) {
    r->ueof = 1;
  } else if (n > 0) {
    if (r->uoff > 0) {  /* compact: keep the unsent bytes at the front */
      memmove(r->up, r->up + r->uoff, r->ulen - r->uoff);
      r->ulen -= r->uoff;
      r->uoff = 0;
    }
    if (!grow(&r->up, &r->ucap, r->ulen + n)) luaL_error(L, "not enough memory");
    memcpy(r->up + r->ulen, chunk, n);
    r->ulen += n;
  }
  if (r->upaused && !r->done) {
    r->upaused = 0;
    curl_easy_pause(r->easy, CURLPAUSE_CONT);  /* from a task, never from curl's callbacks */
  }
  return 0;
}

/* req:take([max]) -> the buffered body bytes (at most max), or nil when none are buffered.
** Reading makes room: a paused transfer resumes. */
static int req_take(lua_State *L) {
  hreq *r = checkreq(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  size_t n = r->len - r->off;
  if (n == 0) return 0;
  if (max > 0 && (size_t)max < n) n = (size_t)max;
  lua_pushlstring(L, r->body + r->off, n);
  r->off += n;
  if (r->off == r->len) r->off = r->len = 0;
  resume_paused(r);
  return 1;
}

/* req:info() -> status, raw header block, effective url, http version, elapsed seconds,
** connects made, done, error (nil or the error object when done with a failure) */
static int req_info(lua_State *L) {
  hreq *r = checkreq(L, 1);
  if (r->easy == NULL) return luaL_error(L, "info: the HTTP request is closed");
  const char *url = NULL;
  long version = 0, connects = 0;
  double total = 0;
  curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
  curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version);
  curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &total);
  curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &connects);
  lua_pushinteger(L, r->status);
  lua_pushlstring(L, r->hdr ? r->hdr : "", r->hlen);
  lua_pushstring(L, url ? url : "");
  switch (version) {
    case CURL_HTTP_VERSION_1_0: lua_pushliteral(L, "1.0"); break;
    case CURL_HTTP_VERSION_1_1: lua_pushliteral(L, "1.1"); break;
    case CURL_HTTP_VERSION_2_0: lua_pushliteral(L, "2"); break;
    case CURL_HTTP_VERSION_3: lua_pushliteral(L, "3"); break;
    default: lua_pushnil(L); break;
  }
  lua_pushnumber(L, total);
  lua_pushinteger(L, connects);
  lua_pushboolean(L, r->done);
  return 7;
}

static int req_close(lua_State *L);

/* req:finish() -> status, raw header block, effective url, http version, elapsed seconds,
** connects made, body: for a transfer that is over, what info() and take() would give; then
** closes the request (one call instead of four for the common, buffered response). */
static int req_finish(lua_State *L) {
  hreq *r = checkreq(L, 1);
  lua_settop(L, 1);
  req_info(L);
  lua_pop(L, 1);  /* done */
  lua_pushlstring(L, r->body ? r->body + r->off : "", r->len - r->off);
  r->off = r->len = 0;
  req_close(L);
  return 7;
}

/* req:done() -> finished, failed */
static int req_done(lua_State *L) {
  hreq *r = checkreq(L, 1);
  lua_pushboolean(L, r->done);
  lua_pushboolean(L, r->done && r->result != CURLE_OK);
  return 2;
}

static void req_abort(hreq *r) {
  r->op = NULL;  /* a task waiting on it is being cancelled: it gets nothing more */
  abort_transfer(r);
}

/* req:close(): aborts the transfer if it still runs, frees its buffers. */
static int req_close(lua_State *L) {
  hreq *r = checkreq(L, 1);
  req_abort(r);
  release_ref(L, r);
  give_back_easy(r);
  give_back_buf(r->hm, &r->body, &r->cap);
  give_back_buf(r->hm, &r->hdr, &r->hcap);
  r->len = r->off = r->hlen = 0;
  return 0;
}

static int req__gc(lua_State *L) {
  hreq *r = (hreq *)lua_touserdata(L, 1);
  /* an in-flight request is anchored: only lua_close gets here with one, and the client it
  ** runs on is finalized after it (created first) */
  if (r->in_multi && !r->hm->closed) {
    curl_multi_remove_handle(r->hm->multi, r->easy);
    r->hm->inflight--;
    r->in_multi = 0;
  }
  if (r->idle) {
    r->idle->data = NULL;
    uv_timer_stop(r->idle);
    uv_close((uv_handle_t *)r->idle, lasync__free_handle);
    r->idle = NULL;
  }
  if (r->easy) {  /* the client may be finalized already: not back to its pool then */
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
  }
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  free(r->body);
  free(r->hdr);
  free(r->up);
  r->body = r->hdr = r->up = NULL;
  return 0;
}

/* Seconds to curl's milliseconds, rounded up: curl reads 0 as "no limit", and a limit must
** never end early. */
static long timeout_ms(double s) {
  double ms = s * 1000.0;
  if (!(ms >= 1.0)) return 1;  /* also 0, negative and NaN: already expired */
  if (ms > 2e9) return 2000000000L;
  return (long)ms + ((double)(long)ms < ms);
}

static int getopt_type(lua_State *L, int opts, const char *name, int type) {
  int t = lua_getfield(L, opts, name);
  if (t != LUA_TNIL && t != type)
    luaL_error(L, "http request option '%s': %s expected, got %s", name, lua_typename(L, type),
               luaL_typename(L, -1));
  return t;
}

/* PLAIN_HTTP or PLAIN_HTTPS if the request table at idx has only a url and method "GET" (every
** other option at its default), else PLAIN_NO. */
static int plain_kind(lua_State *L, int idx) {
  const char *url = NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int t = lua_type(L, -1);
    if (strcmp(k, "url") == 0 && t == LUA_TSTRING) {
      url = lua_tostring(L, -1);
    } else if (!(strcmp(k, "method") == 0 && t == LUA_TSTRING &&
                 strcmp(lua_tostring(L, -1), "GET") == 0)) {
      lua_pop(L, 2);
      return PLAIN_NO;
    }
    lua_pop(L, 1);
  }
  if (url == NULL) return PLAIN_NO;
  if (strncmp(url, "http:", 5) == 0) return PLAIN_HTTP;
  if (strncmp(url, "https:", 6) == 0) return PLAIN_HTTPS;
  return PLAIN_NO;
}

/* Starts the transfer of r, configured, whose userdata is at the top. [-0, +0, e] */
static int start_transfer(lua_State *L, hmulti *hm, hreq *r) {
  if (r->idle_ms) {
    r->idle = (uv_timer_t *)malloc(sizeof *r->idle);
    if (r->idle == NULL) luaL_error(L, "not enough memory");
    uv_timer_init(hm->rt->loop, r->idle);
    r->idle->data = r;
    restart_idle(r);
  }
  if (curl_multi_add_handle(hm->multi, r->easy) != CURLM_OK)
    luaL_error(L, "cannot start the transfer");
  r->in_multi = 1;
  hm->inflight++;
  lua_pushvalue(L, -1);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* curl calls back into r until it is done */
  return 1;
}

/* multi:request(opts) -> req, with the transfer started. opts (from lasync.http): url, method,
** headers (list of "Name: value"), body (string), timeout, connect_timeout, read_timeout
** (seconds), follow_redirects, max_redirects, http_version ("auto"|"1.1"|"2"), verify, ca_file,
** proxy, stream, accept_encoding (false to turn decoding off). */
static int multi_request(lua_State *L) {
  hmulti *hm = checkmulti(L, 1);
  hreq *r;
  CURL *e;
  int follow = 1, kind, ready;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (getopt_type(L, 2, "url", LUA_TSTRING) == LUA_TNIL) luaL_error(L, "http request: url missing");
  lua_pop(L, 1);
  r = (hreq *)lua_newuserdatauv(L, sizeof *r, 2);
  memset(r, 0, sizeof *r);
  r->ref = LUA_NOREF;
  r->hm = hm;
  take_buf(hm, &r->body, &r->cap);
  take_buf(hm, &r->hdr, &r->hcap);
  lasync__setclass(L, hm->rt, LASYNC_CLS_HTTP_REQUEST);  /* from here __gc frees what is made */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 3, REQ_UV_MULTI);  /* the client lives while its requests do */
  kind = plain_kind(L, 2);
  e = take_easy(hm, kind, &ready);
  if (e == NULL) luaL_error(L, "cannot create a curl handle");
  r->easy = e;
  r->kind = kind;
  r->follow = 1;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  if (ready) {  /* configured by the last plain request: only what is this request's own */
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    lua_getfield(L, 2, "url");
    curl_easy_setopt(e, CURLOPT_URL, lua_tostring(L, -1));
    lua_pop(L, 1);
    return start_transfer(L, hm, r);
  }
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, hm);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  if (hm->share) curl_easy_setopt(e, CURLOPT_SHARE, hm->share);
  lua_getfield(L, 2, "url");
  curl_easy_setopt(e, CURLOPT_URL, lua_tostring(L, -1));  /* curl copies strings */
  if (strncmp(lua_tostring(L, -1), "https:", 6) == 0)
    /* concurrent requests to a host wait for its first connection to say (ALPN) whether it
    ** multiplexes, instead of each opening one; (not with cleartext prior knowledge: curl
    ** 7.88 fails HTTP/2 framing when it combines that with PIPEWAIT) */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  lua_pop(L, 1);
  if (getopt_type(L, 2, "method", LUA_TSTRING) != LUA_TNIL) {
    const char *m = lua_tostring(L, -1);
    if (strcmp(m, "HEAD") == 0)
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(m, "GET") != 0)
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "headers", LUA_TTABLE) != LUA_TNIL) {
    lua_Integer i, n = luaL_len(L, -1);
    for (i = 1; i <= n; i++) {
      struct curl_slist *l;
      lua_rawgeti(L, -1, i);
      l = curl_slist_append(r->headers, luaL_checkstring(L, -1));
      if (l == NULL) luaL_error(L, "not enough memory");
      r->headers = l;
      lua_pop(L, 1);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "body_stream", LUA_TBOOLEAN) != LUA_TNIL && lua_toboolean(L, -1)) {
    /* the body comes from req:feed(): chunked (no length known) */
    r->ustream = 1;
    lua_getfield(L, 2, "method");
    if (lua_isnil(L, -1) || strcmp(lua_tostring(L, -1), "POST") == 0)
      curl_easy_setopt(e, CURLOPT_POST, 1L);
    else
      curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    lua_pop(L, 1);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "body", LUA_TSTRING) != LUA_TNIL) {
    size_t len;
    const char *b = lua_tolstring(L, -1, &len);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 3, REQ_UV_BODY);  /* curl reads the bytes in place: keep them alive */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, b);  /* POST unless a method was set above */
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "timeout", LUA_TNUMBER) != LUA_TNIL)
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms(lua_tonumber(L, -1)));
  lua_pop(L, 1);
  if (getopt_type(L, 2, "connect_timeout", LUA_TNUMBER) != LUA_TNIL)
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms(lua_tonumber(L, -1)));
  lua_pop(L, 1);
  if (getopt_type(L, 2, "read_timeout", LUA_TNUMBER) != LUA_TNIL) {
    double s = lua_tonumber(L, -1);
    r->idle_ms = (uint64_t)(s * 1000 + 0.5);
    if (r->idle_ms == 0) r->idle_ms = 1;
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "follow_redirects", LUA_TBOOLEAN) != LUA_TNIL)
    follow = lua_toboolean(L, -1);
  lua_pop(L, 1);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, (long)follow);
  if (getopt_type(L, 2, "max_redirects", LUA_TNUMBER) != LUA_TNIL)
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)lua_tointeger(L, -1));
  else
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
  lua_pop(L, 1);
  if (getopt_type(L, 2, "http_version", LUA_TSTRING) != LUA_TNIL) {
    const char *v = lua_tostring(L, -1);
    if (strcmp(v, "1.1") == 0)
      curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    else if (strcmp(v, "2") == 0) {
      lua_getfield(L, 2, "url");
      /* over TLS, HTTP/2 is negotiated (ALPN); over cleartext, assumed (prior knowledge) */
      curl_easy_setopt(e, CURLOPT_HTTP_VERSION, strncmp(lua_tostring(L, -1), "https:", 6) == 0
                       ? (long)CURL_HTTP_VERSION_2_0 : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
      lua_pop(L, 1);
    }
    else if (strcmp(v, "auto") != 0)
      luaL_error(L, "http request option 'http_version': \"auto\", \"1.1\" or \"2\" expected");
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "verify", LUA_TBOOLEAN) != LUA_TNIL && !lua_toboolean(L, -1)) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_pop(L, 1);
  if (getopt_type(L, 2, "ca_file", LUA_TSTRING) != LUA_TNIL)
    curl_easy_setopt(e, CURLOPT_CAINFO, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (getopt_type(L, 2, "proxy", LUA_TSTRING) != LUA_TNIL)
    curl_easy_setopt(e, CURLOPT_PROXY, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (getopt_type(L, 2, "accept_encoding", LUA_TBOOLEAN) == LUA_TNIL || lua_toboolean(L, -1))
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  /* every encoding curl can decode */
  lua_pop(L, 1);
  if (getopt_type(L, 2, "stream", LUA_TBOOLEAN) != LUA_TNIL && lua_toboolean(L, -1))
    r->stream = 1;
  lua_pop(L, 1);
  r->follow = follow;
  return start_transfer(L, hm, r);
}

/* req:_release(): drops the anchor once the transfer is over (the Lua layer calls it) */
static int req_release(lua_State *L) {
  release_ref(L, checkreq(L, 1));
  return 0;
}

static int multi_inflight(lua_State *L) {
  lua_pushinteger(L, checkmulti(L, 1)->inflight);
  return 1;
}

static void multi_shutdown(hmulti *hm) {
  if (hm->closed) return;
  hm->closed = 1;
  curl_multi_cleanup(hm->multi);  /* requests left it already (they anchor the client) */
  while (hm->nidle > 0) curl_easy_cleanup(hm->idle[--hm->nidle]);
  while (hm->nbufs > 0) free(hm->bufs[--hm->nbufs]);
  while (hm->socks) close_sock(hm->socks);
  free(hm->byfd);
  hm->byfd = NULL;
  hm->nbyfd = 0;
  if (hm->share) curl_share_cleanup(hm->share);
  hm->timer->data = NULL;
  uv_timer_stop(hm->timer);
  uv_close((uv_handle_t *)hm->timer, lasync__free_handle);
}

static int multi__gc(lua_State *L) {
  hmulti *hm = (hmulti *)lua_touserdata(L, 1);
  if (hm->multi) multi_shutdown(hm);
  return 0;
}

/* core.http_multi([opts]) -> a multi handle with its own connection pool; opts:
** max_connections, max_per_host, share (DNS, TLS sessions, cookies off) */
static int core_http_multi(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  hmulti *hm;
  lua_Integer maxc = 0, maxh = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (getopt_type(L, 1, "max_connections", LUA_TNUMBER) != LUA_TNIL) maxc = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (getopt_type(L, 1, "max_per_host", LUA_TNUMBER) != LUA_TNIL) maxh = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  hm = (hmulti *)lua_newuserdatauv(L, sizeof *hm, 0);
  memset(hm, 0, sizeof *hm);
  hm->closed = 1;
  lasync__setclass(L, rt, LASYNC_CLS_HTTP_MULTI);
  hm->rt = rt;
  hm->timer = (uv_timer_t *)malloc(sizeof *hm->timer);
  if (hm->timer == NULL) luaL_error(L, "not enough memory");
  hm->multi = curl_multi_init();
  if (hm->multi == NULL) {
    free(hm->timer);
    luaL_error(L, "cannot create a curl multi handle");
  }
  uv_timer_init(rt->loop, hm->timer);
  hm->timer->data = hm;
  hm->closed = 0;
  hm->share = curl_share_init();
  if (hm->share) {
    curl_share_setopt(hm->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(hm->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  curl_multi_setopt(hm->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(hm->multi, CURLMOPT_SOCKETDATA, hm);
  curl_multi_setopt(hm->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(hm->multi, CURLMOPT_TIMERDATA, hm);
  curl_multi_setopt(hm->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  if (maxc > 0) curl_multi_setopt(hm->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)maxc);
  if (maxh > 0) curl_multi_setopt(hm->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)maxh);
  /* idle connections kept for reuse: curl's default (4 per easy handle in the multi) shrinks
  ** whenever few requests are in flight, and a fan-out then reconnects over and over */
  curl_multi_setopt(hm->multi, CURLMOPT_MAXCONNECTS, maxc > 0 ? (long)maxc : IDLE_CONN_MAX);
  return 1;
}

void lasync__open_http(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg multi_methods[] = {
    {"request", multi_request}, {"inflight", multi_inflight}, {NULL, NULL}
  };
  static const luaL_Reg multi_meta[] = {{"__gc", multi__gc}, {NULL, NULL}};
  static const luaL_Reg req_methods[] = {
    {"wait", req_wait}, {"take", req_take}, {"info", req_info}, {"done", req_done},
    {"feed", req_feed}, {"finish", req_finish},
    {"headers_ready", req_headers_ready}, {"close", req_close}, {"_release", req_release},
    {NULL, NULL}
  };
  static const luaL_Reg req_meta[] = {{"__gc", req__gc}, {"__close", req_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"http_multi", core_http_multi}, {NULL, NULL}};
  static int curl_ready = 0;
  if (!curl_ready) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl_ready = 1;
  }
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_HTTP_MULTI, LASYNC_HTTP_MULTI_MT, multi_methods, multi_meta);
  lasync__newclass(L, rt, LASYNC_CLS_HTTP_REQUEST, LASYNC_HTTP_REQUEST_MT, req_methods, req_meta);
  luaL_setfuncs(L, funcs, 1);
}
