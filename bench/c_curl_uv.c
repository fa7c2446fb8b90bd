/* http, C driving curl-multi from libuv in the plain multi-uv style (curl's docs/examples/
** multi-uv.c): CURLMOPT_SOCKETFUNCTION creates a uv_poll_t per socket on first use and closes it
** on CURL_POLL_REMOVE, CURLMOPT_TIMERFUNCTION drives one uv_timer_t, curl_multi_socket_action on
** each event. N GETs of URL (argv[1]) with C reused easy handles. The floor for lasync's design.
**   cc -O2 -o bench/out/c_curl_uv bench/c_curl_uv.c $(pkg-config --cflags --libs libcurl libuv)
**   bench/out/c_curl_uv http://127.0.0.1:PORT/1k [N=20000] [C=64] [tuned]
** With "tuned" (an info row in bench/RESULTS.md): CURLOPT_NOSIGNAL on every handle (no
** rt_sigaction pair per curl call) and curl's 0 ms timeouts armed as 0 ms, not 1 ms. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct { CURL *easy; size_t got; } conn;
typedef struct { uv_poll_t poll; curl_socket_t fd; } sockctx;

static uv_loop_t *loop;
static CURLM *multi;
static uv_timer_t timer;
static long n, started, done, bad;
static int tuned;

static size_t on_write(char *p, size_t s, size_t k, void *ud) {
  (void)p;
  ((conn *)ud)->got += s * k;
  return s * k;
}

static void check_done(void) {
  CURLMsg *m;
  int q;
  while ((m = curl_multi_info_read(multi, &q)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    conn *cn;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&cn);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (m->data.result != CURLE_OK || status != 200 || cn->got != 1024) bad++;
    cn->got = 0;
    done++;
    curl_multi_remove_handle(multi, e);
    if (started < n) { started++; curl_multi_add_handle(multi, e); }
  }
  if (done >= n) uv_stop(loop);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  int running, flags = 0;
  sockctx *s = (sockctx *)h->data;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(multi, s->fd, flags, &running);
  check_done();
}

static void on_timeout(uv_timer_t *t) {
  int running;
  (void)t;
  curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done();
}

static int start_timeout(CURLM *m, long ms, void *ud) {
  (void)m; (void)ud;
  if (ms < 0) uv_timer_stop(&timer);
  else uv_timer_start(&timer, on_timeout, ms == 0 && !tuned ? 1 : (uint64_t)ms, 0);
  return 0;
}

static void on_close(uv_handle_t *h) { free(h->data); }

static int handle_socket(CURL *e, curl_socket_t fd, int action, void *up, void *sp) {
  sockctx *s = (sockctx *)sp;
  int ev = 0;
  (void)e; (void)up;
  switch (action) {
  case CURL_POLL_IN: case CURL_POLL_OUT: case CURL_POLL_INOUT:
    if (s == NULL) {
      s = malloc(sizeof *s);
      s->fd = fd;
      uv_poll_init_socket(loop, &s->poll, fd);
      s->poll.data = s;
      curl_multi_assign(multi, fd, s);
    }
    if (action != CURL_POLL_IN) ev |= UV_WRITABLE;
    if (action != CURL_POLL_OUT) ev |= UV_READABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    break;
  case CURL_POLL_REMOVE:
    if (s) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, on_close);
      curl_multi_assign(multi, fd, NULL);
    }
    break;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *url = argc > 1 ? argv[1] : "http://127.0.0.1:8080/1k";
  long c;
  conn *conns;
  n = argc > 2 ? atol(argv[2]) : 20000;
  c = argc > 3 ? atol(argv[3]) : 64;
  tuned = argc > 4 && strcmp(argv[4], "tuned") == 0;
  conns = calloc((size_t)c, sizeof *conns);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  loop = uv_default_loop();
  uv_timer_init(loop, &timer);
  multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, handle_socket);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, start_timeout);
  for (long i = 0; i < c; i++) {
    conns[i].easy = curl_easy_init();
    curl_easy_setopt(conns[i].easy, CURLOPT_URL, url);
    curl_easy_setopt(conns[i].easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(conns[i].easy, CURLOPT_WRITEDATA, &conns[i]);
    curl_easy_setopt(conns[i].easy, CURLOPT_PRIVATE, &conns[i]);
    if (tuned) curl_easy_setopt(conns[i].easy, CURLOPT_NOSIGNAL, 1L);
  }
  uint64_t t0 = uv_hrtime();
  for (long i = 0; i < c && started < n; i++, started++) curl_multi_add_handle(multi, conns[i].easy);
  uv_run(loop, UV_RUN_DEFAULT);
  double wall = (uv_hrtime() - t0) * 1e-9;
  if (bad || done != n) { fprintf(stderr, "%ld bad responses, %ld of %ld done\n", bad, done, n); return 1; }
  printf("RESULT name=http impl=%s req_per_s=%.6g wall_s=%.6g n=%ld conns=%ld\n",
         tuned ? "c_curl_uv_tuned" : "c_curl_uv",
         n / wall, wall, n, c);
  return 0;
}
