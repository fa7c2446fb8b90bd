/*
** timer.c: the runtime's timer heap. Every sleep and deadline is an entry in one binary heap
** (ordered by deadline, then insertion), and one uv_timer wakes the loop for the earliest.
** Entries are embedded in their owners, so arming a timer allocates nothing.
*/
#include <math.h>
#include <stdlib.h>
#include "internal.h"

double lasync__now(void) {
  return (double)uv_hrtime() * 1e-9;
}

static int before(const lasync__timer *a, const lasync__timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void place(lasync__runtime *rt, uint32_t i, lasync__timer *tm) {
  rt->heap[i] = tm;
  tm->idx = i + 1;
}

static void sift_up(lasync__runtime *rt, uint32_t i) {
  lasync__timer *tm = rt->heap[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (!before(tm, rt->heap[parent])) break;
    place(rt, i, rt->heap[parent]);
    i = parent;
  }
  place(rt, i, tm);
}

static void sift_down(lasync__runtime *rt, uint32_t i) {
  lasync__timer *tm = rt->heap[i];
  for (;;) {
    uint32_t child = 2 * i + 1;
    if (child >= rt->nheap) break;
    if (child + 1 < rt->nheap && before(rt->heap[child + 1], rt->heap[child])) child++;
    if (!before(rt->heap[child], tm)) break;
    place(rt, i, rt->heap[child]);
    i = child;
  }
  place(rt, i, tm);
}

void lasync__timer_stop(lasync__runtime *rt, lasync__timer *tm) {
  uint32_t i;
  lasync__timer *last;
  if (tm->idx == 0) return;
  i = tm->idx - 1;
  tm->idx = 0;
  last = rt->heap[--rt->nheap];
  if (i == rt->nheap) return;  /* it was the last entry */
  rt->heap[i] = last;
  last->idx = i + 1;
  if (i > 0 && before(last, rt->heap[(i - 1) / 2]))
    sift_up(rt, i);
  else
    sift_down(rt, i);
}

void lasync__timer_start(lasync__runtime *rt, lasync__timer *tm, double when) {
  lasync__timer_stop(rt, tm);
  if (rt->nheap == rt->capheap) {
    uint32_t cap = rt->capheap ? rt->capheap * 2 : 64;
    lasync__timer **h = realloc(rt->heap, cap * sizeof *h);
    if (h == NULL) abort();  /* out of memory outside any Lua call: nothing to unwind */
    rt->heap = h;
    rt->capheap = cap;
  }
  tm->when = when;
  tm->seq = rt->timer_seq++;
  rt->heap[rt->nheap] = tm;
  tm->idx = ++rt->nheap;
  sift_up(rt, rt->nheap - 1);
}

void lasync__timers_run(lasync__runtime *rt, double now) {
  while (rt->nheap > 0 && rt->heap[0]->when <= now) {
    lasync__timer *tm = rt->heap[0];
    lasync__timer_stop(rt, tm);
    lasync__task_timer(rt, lasync__container_of(tm, lasync__task, timer));
  }
}

double lasync__timers_next(lasync__runtime *rt, double now) {
  return rt->nheap > 0 ? rt->heap[0]->when - now : HUGE_VAL;
}

/* {====== Lua API ======} */

static int timer_now(lua_State *L) {
  lua_pushnumber(L, lasync__now());
  return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  lasync__runtime *rt = lasync__rt(L);
  (void)status; (void)ctx;
  lasync__check_cancel(L, rt, rt->current);
  return lua_gettop(L) - 1;  /* the extra arguments */
}

static int timer_sleep(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  double secs = luaL_checknumber(L, 1);
  lasync__task *t;
  luaL_argcheck(L, secs >= 0, 1, "must be a number >= 0");
  t = lasync__check_suspend(L, rt, "sleep");
  lasync__check_cancel(L, rt, t);
  if (secs == 0) {
    lasync__enqueue(rt, t);
    return lasync__suspend(L, rt, t, LASYNC_OP_YIELD, 0, sleep_k);
  }
  t->timer.when = lasync__now() + secs;  /* lasync__suspend arms it */
  return lasync__suspend(L, rt, t, LASYNC_OP_SLEEP, 0, sleep_k);
}

static int timer_yield(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lasync__task *t = lasync__check_suspend(L, rt, "yield");
  lasync__check_cancel(L, rt, t);
  lua_settop(L, 0);
  lua_pushnil(L);  /* sleep_k returns gettop - 1 values */
  lasync__enqueue(rt, t);
  return lasync__suspend(L, rt, t, LASYNC_OP_YIELD, 0, sleep_k);
}

void lasync__open_timer(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg funcs[] = {
    {"now", timer_now},
    {"sleep", timer_sleep},
    {"yield", timer_yield},
    {NULL, NULL}
  };
  /* stack: module table */
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
}
