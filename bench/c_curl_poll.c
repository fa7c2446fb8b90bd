/* http, C on curl's own loop: N GETs of URL (argv[1]) with C reused easy handles on one multi,
** driven by curl_multi_perform + curl_multi_poll. The ceiling for a curl-multi based client.
**   cc -O2 -o bench/out/c_curl_poll bench/c_curl_poll.c $(pkg-config --cflags --libs libcurl libuv)
**   bench/out/c_curl_poll http://127.0.0.1:PORT/1k [N=20000] [C=64] */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct { CURL *easy; size_t got; } conn;

static size_t on_write(char *p, size_t s, size_t n, void *ud) {
  (void)p;
  ((conn *)ud)->got += s * n;
  return s * n;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  const char *url = argc > 1 ? argv[1] : "http://127.0.0.1:8080/1k";
  long n = argc > 2 ? atol(argv[2]) : 20000, c = argc > 3 ? atol(argv[3]) : 64;
  long started = 0, done = 0, bad = 0;
  conn *conns = calloc((size_t)c, sizeof *conns);
  CURLM *multi;
  int running = 1;
  double t0, wall;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  multi = curl_multi_init();
  for (long i = 0; i < c; i++) {
    conns[i].easy = curl_easy_init();
    curl_easy_setopt(conns[i].easy, CURLOPT_URL, url);
    curl_easy_setopt(conns[i].easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(conns[i].easy, CURLOPT_WRITEDATA, &conns[i]);
    curl_easy_setopt(conns[i].easy, CURLOPT_PRIVATE, &conns[i]);
  }
  t0 = now();
  for (long i = 0; i < c && started < n; i++, started++) curl_multi_add_handle(multi, conns[i].easy);
  while (done < n) {
    CURLMsg *m;
    int q;
    curl_multi_perform(multi, &running);
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
    if (done < n) curl_multi_poll(multi, NULL, 0, 1000, NULL);
  }
  wall = now() - t0;
  if (bad) { fprintf(stderr, "%ld bad responses\n", bad); return 1; }
  printf("RESULT name=http impl=c_curl_poll req_per_s=%.6g wall_s=%.6g n=%ld conns=%ld\n",
         n / wall, wall, n, c);
  for (long i = 0; i < c; i++) curl_easy_cleanup(conns[i].easy);
  curl_multi_cleanup(multi);
  free(conns);
  return 0;
}
