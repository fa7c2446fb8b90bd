/*
** req.c: libuv requests awaited by a task (connect, shutdown, getaddrinfo, fs, thread-pool
** work), the one place that owns their lifetime; abandoned thread-pool work; closing the loop.
**
** A request has two ends that come in either order: its completion (the libuv callback, which
** calls lasync__req_done) and its task (which either takes the results, in the deliver
** function, or gives up, when it is cancelled). Whichever comes second frees it. A task that
** gives up on a request in flight abandons it: the type's cancel hook stops what can be stopped
** (uv_cancel, uv_close), and the completion, which libuv always delivers, frees it then.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "internal.h"

void lasync__free_handle(uv_handle_t *h) {
  free(h);
}

/* {====== awaited requests ======} */

/* Takes r out of rt->reqs: its task no longer waits for it. */
static void req_unlink(lasync__req *r) {
  if (r->op == NULL) return;  /* not linked */
  if (r->prev) r->prev->next = r->next; else r->rt->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  r->next = r->prev = NULL;
  r->op = NULL;
}

/* Frees r; taken: the deliver function took its results. */
static void req_free(lasync__req *r, int taken) {
  req_unlink(r);
  if (r->type->release) r->type->release(r, taken);
  free(r);
}

/* lasync_op's cancel: the waiting task was cancelled, before or after the completion came. */
static void req_cancel(void *data) {
  lasync__req *r = (lasync__req *)data;
  req_unlink(r);
  if (!r->done && r->type->pool) lasync__abandon(r->rt, &r->ab);
  if (r->type->cancel) r->type->cancel(r);
  if (r->done) req_free(r, 0);  /* completed, but the task was cancelled before it resumed */
}

void *lasync__req_new(lua_State *L, const lasync__reqtype *type, size_t size) {
  lasync_op *op = lasync_op_new(L);  /* first: it checks that the task may suspend here */
  lasync__req *r = (lasync__req *)calloc(1, size);
  if (r == NULL) luaL_error(L, "not enough memory");
  r->type = type;
  r->rt = op->rt;
  r->op = op;
  r->next = r->rt->reqs;  /* linked while its task waits for it */
  if (r->next) r->next->prev = r;
  r->rt->reqs = r;
  return r;
}

int lasync__req_await(lua_State *L, lasync__req *r, int rc, lasync_deliver_fn deliver) {
  lasync_op *op = r->op;
  if (rc < 0) {  /* libuv refused to start it: no callback will come */
    r->done = 1;
    r->status = rc;
    lasync_op_complete(op, 0);
  }
  return lasync_op_await(L, op, r, deliver, req_cancel);
}

void lasync__req_done(lasync__req *r, int status) {
  lasync__abandon_end(&r->ab);
  if (r->op == NULL) {  /* abandoned: nobody waits for it any more */
    req_free(r, 0);
    return;
  }
  r->done = 1;
  r->status = status;
  lasync_op_complete(r->op, 0);  /* the deliver function frees r */
}

void lasync__req_free(lasync__req *r) {
  req_free(r, 1);
}

void lasync__req_drop(lasync__req *r) {
  if (r->op != NULL) req_cancel(r);  /* (an abandoned one must not be abandoned twice) */
}

void lasync__close_reqs(lasync__runtime *rt) {
  while (rt->reqs) lasync__req_drop(rt->reqs);  /* each drop unlinks it */
}

/* {====== abandoned thread-pool work ======} */

#define ABANDON_GRACE 1.0  /* seconds the closing runtime waits for abandoned work */

/* libuv's library destructor joins its pool threads when the process exits (or when a plain
** lua5.4 unloads this module): a thread stuck in open(2) on a FIFO would hang that forever.
** So once work was abandoned, this module stays loaded, and at exit, if abandoned work is still
** running, the process ends without the remaining exit handlers (stdio is flushed first). */
static unsigned stuck;         /* abandoned work still running, in this process */

#ifdef __GLIBC__
static void exit_without_joining(int status, void *arg) {
  (void)arg;
  if (__atomic_load_n(&stuck, __ATOMIC_SEQ_CST) > 0) {
    fflush(NULL);
    _exit(status);
  }
}
#endif

static void guard_exit(void) {
  static int done;
  if (__atomic_exchange_n(&done, 1, __ATOMIC_SEQ_CST)) return;
#ifdef __GLIBC__
  {
    Dl_info info;  /* RTLD_NODELETE: lua_close's dlclose must not unload the handler */
    if (dladdr((void *)guard_exit, &info) && info.dli_fname)
      (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    on_exit(exit_without_joining, NULL);
  }
#endif
}

void lasync__abandon(lasync__runtime *rt, lasync__abandoned *a) {
  guard_exit();
  a->running = 1;
  __atomic_add_fetch(&stuck, 1, __ATOMIC_SEQ_CST);
  a->rt = rt;
  a->prev = NULL;
  a->next = rt->abandoned;
  if (a->next) a->next->prev = a;
  rt->abandoned = a;
  rt->nabandoned++;
}

/* Unlinks a from its runtime's list (it may still be running). */
static void abandon_unlink(lasync__abandoned *a) {
  lasync__runtime *rt = a->rt;
  if (rt == NULL) return;
  if (a->prev) a->prev->next = a->next;
  else rt->abandoned = a->next;
  if (a->next) a->next->prev = a->prev;
  a->rt = NULL;
  a->prev = a->next = NULL;
  rt->nabandoned--;
}

void lasync__abandon_end(lasync__abandoned *a) {
  if (a->running) {
    a->running = 0;
    __atomic_sub_fetch(&stuck, 1, __ATOMIC_SEQ_CST);
  }
  abandon_unlink(a);
}

/* Only abandoned work keeps the loop alive (no active handle, none closing, no other req).
** This reads two libuv loop fields that are not public API (closing_handles, active_reqs):
** libuv 1.44 on Linux; to revisit on a libuv upgrade. */
static int only_abandoned(lasync__runtime *rt) {
  uv_loop_t *loop = rt->loop;
  return rt->nabandoned > 0 && loop->active_handles == 0 && loop->closing_handles == NULL &&
         loop->active_reqs.count <= rt->nabandoned;
}

int lasync__loop_alive(lasync__runtime *rt) {
  return uv_loop_alive(rt->loop) && !only_abandoned(rt);
}

int lasync__close_loop(lua_State *L, lasync__runtime *rt) {
  uv_loop_t *loop = rt->loop;
  double give_up = -1;
  int closed = 0;
  for (;;) {
    uv_run(loop, UV_RUN_NOWAIT);  /* close callbacks free handle memory */
    if (uv_loop_close(loop) == 0 || !uv_loop_alive(loop)) {  /* (a handle never closed: */
      closed = 1;                                            /* nothing to wait for) */
      break;
    }
    if (!only_abandoned(rt)) {
      give_up = -1;
      uv_run(loop, UV_RUN_ONCE);
    } else if (give_up < 0) {
      give_up = lasync__now() + ABANDON_GRACE;
    } else if (lasync__now() >= give_up) {
      break;
    } else {
      uv_sleep(1);
    }
  }
  if (!closed) {
    lua_pushfstring(L, "lasync: not waiting for %d cancelled thread-pool request(s) that are "
                    "still running (e.g. opening a FIFO nobody writes to)", (int)rt->nabandoned);
    lua_warning(L, lua_tostring(L, -1), 0);
    lua_pop(L, 1);
  }
  return closed;
}

void lasync__forget_abandoned(lasync__runtime *rt) {
  while (rt->abandoned) abandon_unlink(rt->abandoned);
}
