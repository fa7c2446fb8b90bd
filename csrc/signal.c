/*
** signal.c: Unix signals as watchers (lasync.signal) on uv_signal_t.
**
** A watcher counts the deliveries of its signal from the moment it is created; w:wait()
** suspends the calling task until there is at least one, and returns how many there were. The
** Lua layer (lua/lasync/signal.lua) builds signal.wait and signal.on on top.
**
** libuv replaces the process's handler for a signal while one of its watchers is active, and
** resets the signal to SIG_DFL when the last one stops. lasync counts its active watchers per
** signal (process-wide, like signals), saves the disposition in place before the first one
** (an inherited SIG_IGN, a host's handler), puts it back when the last one is gone, and then
** calls the host's hook (lasync_set_signal_hook). The signal is blocked in the calling thread
** meanwhile, so that one arriving between libuv's reset and the restore is not lost to SIG_DFL.
*/
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define LASYNC_SIGNAL_MT "lasync.signal"  /* also in error.c's class names */
#define MAXSIG 65

typedef struct lsig {
  uv_signal_t *h;              /* malloc'd, freed in its close callback; NULL once closed */
  lasync_op *op;               /* the waiting task's op */
  lua_Integer count;           /* deliveries not yet returned by wait */
  int signum;
} lsig;

static const struct { const char *name; int num; } signals[] = {
  {"SIGHUP", SIGHUP}, {"SIGINT", SIGINT}, {"SIGQUIT", SIGQUIT}, {"SIGILL", SIGILL},
  {"SIGTRAP", SIGTRAP}, {"SIGABRT", SIGABRT}, {"SIGBUS", SIGBUS}, {"SIGFPE", SIGFPE},
  {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1}, {"SIGSEGV", SIGSEGV}, {"SIGUSR2", SIGUSR2},
  {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM}, {"SIGCHLD", SIGCHLD},
  {"SIGCONT", SIGCONT}, {"SIGSTOP", SIGSTOP}, {"SIGTSTP", SIGTSTP}, {"SIGTTIN", SIGTTIN},
  {"SIGTTOU", SIGTTOU}, {"SIGURG", SIGURG}, {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ},
  {"SIGVTALRM", SIGVTALRM}, {"SIGPROF", SIGPROF}, {"SIGWINCH", SIGWINCH}, {"SIGIO", SIGIO},
  {"SIGSYS", SIGSYS}, {NULL, 0}
};

static void (*release_hook)(int signum);
static int active[MAXSIG];     /* lasync's active watchers per signal, in this process */
static struct sigaction saved[MAXSIG];  /* the disposition before the first watcher */

LASYNC_API void lasync_set_signal_hook(void (*hook)(int signum)) {
  release_hook = hook;
}

int lasync__signal_number(const char *name) {
  int i;
  for (i = 0; signals[i].name; i++)
    if (strcmp(name, signals[i].name) == 0 || strcmp(name, signals[i].name + 3) == 0)
      return signals[i].num;
  return 0;
}

const char *lasync__signal_name(int signum) {
  int i;
  for (i = 0; signals[i].name; i++)
    if (signals[i].num == signum) return signals[i].name;
  return NULL;
}

/* The signal named at idx ("SIGINT" or "INT"); raises an argument error otherwise. */
static int checksignal(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  int signum = lasync__signal_number(name);
  if (signum == 0) return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
  return signum;
}

static const char *signame(int num) {
  const char *name = lasync__signal_name(num);
  return name ? name : "?";
}

static void on_signal(uv_signal_t *h, int signum) {
  lsig *s = (lsig *)h->data;
  (void)signum;
  if (s == NULL) return;
  s->count++;
  if (s->op) {
    lasync_op *op = s->op;
    s->op = NULL;
    lasync_op_complete(op, 0);
  }
}

/* Stops and closes the watcher; a task waiting on it returns nil. Runs no Lua. */
static void sig_close(lsig *s) {
  int signum = s->signum;
  sigset_t set, old;
  if (s->h == NULL) return;
  s->h->data = NULL;
  sigemptyset(&set);
  sigaddset(&set, signum);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  uv_close((uv_handle_t *)s->h, lasync__free_handle);  /* stops it now: libuv may reset the signal */
  s->h = NULL;
  if (__atomic_sub_fetch(&active[signum], 1, __ATOMIC_SEQ_CST) == 0) {
    struct sigaction cur;
    /* libuv resets it only when no other libuv handle (the host's, a child watcher) needs it */
    if (sigaction(signum, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL &&
        !(cur.sa_flags & SA_SIGINFO))
      sigaction(signum, &saved[signum], NULL);
    if (release_hook) release_hook(signum);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (s->op) {
    lasync_op *op = s->op;
    s->op = NULL;
    lasync_op_complete(op, 0);
  }
}

static lsig *checksig(lua_State *L) {
  lsig *s = (lsig *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_SIGNAL);
  return s;
}

/* core.signal_watch(name) -> watcher, counting deliveries from now on */
static int signal_watch(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  int signum = checksignal(L, 1), rc;
  lsig *s;
  uv_signal_t *h;
  luaL_argcheck(L, signum != SIGKILL && signum != SIGSTOP, 1, "SIGKILL and SIGSTOP cannot be "
                "caught");
  luaL_argcheck(L, signum != SIGSEGV && signum != SIGBUS && signum != SIGFPE &&
                signum != SIGILL, 1, "a fault signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL) cannot be "
                "watched");
  s = (lsig *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->signum = signum;
  lasync__setclass(L, rt, LASYNC_CLS_SIGNAL);
  h = (uv_signal_t *)malloc(sizeof *h);
  if (h == NULL) return luaL_error(L, "not enough memory");
  rc = uv_signal_init(rt->loop, h);
  if (rc < 0) {
    free(h);
    return luaL_error(L, "cannot watch %s: %s", signame(signum), uv_strerror(rc));
  }
  h->data = s;
  if (__atomic_add_fetch(&active[signum], 1, __ATOMIC_SEQ_CST) == 1)
    sigaction(signum, NULL, &saved[signum]);  /* before libuv installs its handler */
  rc = uv_signal_start(h, on_signal, signum);
  if (rc < 0) {
    __atomic_sub_fetch(&active[signum], 1, __ATOMIC_SEQ_CST);
    uv_close((uv_handle_t *)h, lasync__free_handle);
    return luaL_error(L, "cannot watch %s: %s", signame(signum), uv_strerror(rc));
  }
  s->h = h;
  return 1;
}

static int wait_deliver(lua_State *L, void *data, int status) {
  lsig *s = (lsig *)data;
  lua_Integer n = s->count;
  (void)status;
  if (n == 0) {  /* closed while waiting */
    lua_pushnil(L);
    return 1;
  }
  s->count = 0;
  lua_pushinteger(L, n);
  return 1;
}

static void wait_cancel(void *data) {
  ((lsig *)data)->op = NULL;
}

/* w:wait() -> number of deliveries since the last wait (at least 1), or nil once closed */
static int sig_wait(lua_State *L) {
  lsig *s = checksig(L);
  lasync_op *op;
  if (s->h == NULL && s->count == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (s->op) return luaL_error(L, "another task is already waiting on this signal watcher");
  op = lasync_op_new(L);  /* the task stack keeps s alive while it waits */
  if (s->count > 0)
    lasync_op_complete(op, 0);  /* still a suspension point: cancellation is checked */
  else
    s->op = op;
  return lasync_op_await(L, op, s, wait_deliver, wait_cancel);
}

/* w:close() */
static int sig_lclose(lua_State *L) {
  sig_close(checksig(L));
  return 0;
}

/* __gc and __close */
static int sig__gc(lua_State *L) {
  sig_close(checksig(L));
  return 0;
}

static int sig__tostring(lua_State *L) {
  lsig *s = checksig(L);
  lua_pushfstring(L, "lasync.signal (%s%s)", signame(s->signum), s->h ? "" : ", closed");
  return 1;
}

/* core.signal_raise(name): sends the signal to this process */
static int signal_raise(lua_State *L) {
  int signum = checksignal(L, 1);
  int rc = uv_kill(uv_os_getpid(), signum);
  if (rc < 0) return luaL_error(L, "cannot send %s: %s", signame(signum), uv_strerror(rc));
  return 0;
}

/* core.signal_number(name) -> number, or nil for an unknown name */
static int signal_number(lua_State *L) {
  int signum = lasync__signal_number(luaL_checkstring(L, 1));
  if (signum == 0)
    lua_pushnil(L);
  else
    lua_pushinteger(L, signum);
  return 1;
}

/* {====== Ctrl-C and Ctrl-\\ for a program's main task ======} */

/* async.main and the interpreter (lasync.cli) handle SIGINT and SIGQUIT with plain handlers
** (process-wide, like signals; one Lua state at a time) that only notify a task: Ctrl-C runs
** on_int (which cancels the main task), a second Ctrl-C before it is rearmed kills the process
** as the default action would, Ctrl-\\ runs on_quit (which prints the task dump). While a
** script watches one of these signals itself (signal.wait, signal.on), its watcher gets it:
** the handler waits in saved[] and is put back when the last watcher goes. */
static lasync_notifier *int_notifier, *quit_notifier;
static lasync__runtime *int_owner;   /* the runtime that installed them, or NULL */
static volatile sig_atomic_t interrupts;
static struct sigaction int_prev[2];  /* SIGINT's and SIGQUIT's disposition before */

static void on_sigint(int sig) {
  (void)sig;
  if (interrupts++ > 0 || int_notifier == NULL) {  /* a second Ctrl-C: the default action */
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
    return;
  }
  lasync_notify(int_notifier);  /* uv_async_send: async-signal-safe */
}

static void on_sigquit(int sig) {
  (void)sig;
  if (quit_notifier) lasync_notify(quit_notifier);
}

/* Sets the disposition of signum to sa, or, while a watcher holds the signal, the one its
** release restores; stores the one it replaces in *old. */
static void set_disposition(int signum, const struct sigaction *sa, struct sigaction *old) {
  if (__atomic_load_n(&active[signum], __ATOMIC_SEQ_CST) > 0) {
    if (old) *old = saved[signum];
    saved[signum] = *sa;
  } else {
    sigaction(signum, sa, old);
  }
}

static void interrupts_off(lasync__runtime *rt, lua_State *L) {
  if (int_owner != rt) return;  /* (rt is never NULL) */
  set_disposition(SIGINT, &int_prev[0], NULL);
  set_disposition(SIGQUIT, &int_prev[1], NULL);
  if (L) {  /* else the runtime is closing: lasync__close_notifiers closes them */
    lasync__notifier_close(int_notifier, L);
    lasync__notifier_close(quit_notifier, L);
  }
  int_notifier = quit_notifier = NULL;
  int_owner = NULL;
}

/* core.interrupts_on(on_int, on_quit): each runs in a new task when its signal arrives */
static int core_interrupts_on(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  struct sigaction sa;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (int_owner != NULL)
    return luaL_error(L, "Ctrl-C is handled already (by async.main or the interpreter%s)",
                      int_owner == rt ? "" : ", in another Lua state");
  lua_settop(L, 2);
  lua_pushvalue(L, 1);
  int_notifier = lasync_notifier_new(L);  /* takes the function on top */
  lua_pushvalue(L, 2);
  quit_notifier = lasync_notifier_new(L);
  lasync_notifier_unref(int_notifier);  /* signals may never come: no keep-alive */
  lasync_notifier_unref(quit_notifier);
  int_owner = rt;
  interrupts = 0;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_sigint;
  set_disposition(SIGINT, &sa, &int_prev[0]);
  sa.sa_handler = on_sigquit;
  set_disposition(SIGQUIT, &sa, &int_prev[1]);
  return 0;
}

/* core.interrupts_off(): puts back the dispositions from before core.interrupts_on */
static int core_interrupts_off(lua_State *L) {
  interrupts_off(lasync__rt(L), L);
  return 0;
}

/* core.interrupts_rearm(): the next Ctrl-C is handled gracefully again (the REPL) */
static int core_interrupts_rearm(lua_State *L) {
  (void)L;
  interrupts = 0;
  return 0;
}

void lasync__close_signal(lasync__runtime *rt) {
  interrupts_off(rt, NULL);
}

void lasync__open_signal(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg methods[] = {{"wait", sig_wait}, {"close", sig_lclose}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
    {"__gc", sig__gc}, {"__close", sig__gc}, {"__tostring", sig__tostring}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"signal_watch", signal_watch}, {"signal_raise", signal_raise},
    {"signal_number", signal_number}, {"interrupts_on", core_interrupts_on},
    {"interrupts_off", core_interrupts_off}, {"interrupts_rearm", core_interrupts_rearm},
    {NULL, NULL}
  };
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_SIGNAL, LASYNC_SIGNAL_MT, methods, meta);
  luaL_setfuncs(L, funcs, 1);
}
