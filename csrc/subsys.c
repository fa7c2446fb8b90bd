/*
** subsys.c: the subsystems of lasync.core, in the spirit of Lua's linit.c. luaopen_lasync_core
** opens them in this order; the runtime's finalizer closes them in the reverse order; the
** scheduler asks them whether something can still wake a task. Adding a subsystem is one line
** here (and its file in the Makefile and the rockspec).
*/
#include "internal.h"

const lasync__subsystem lasync__subsystems[] = {
  /* name       open                    close                     pending */
  {"task",      lasync__open_task,      NULL,                     NULL},
  {"timer",     lasync__open_timer,     NULL,                     NULL},
  {"scope",     lasync__open_scope,     NULL,                     NULL},
  {"waitset",   lasync__open_waitset,   NULL,                     NULL},
  {"context",   lasync__open_context,   NULL,                     NULL},
  {"ops",       lasync__open_ops,       lasync__close_notifiers,  lasync__ops_pending},
  {"req",       NULL,                   lasync__close_reqs,       NULL},
  {"http",      lasync__open_http,      NULL,                     NULL},
  {"fs",        lasync__open_fs,        NULL,                     NULL},
  {"dns",       lasync__open_dns,       NULL,                     NULL},
  {"signal",    lasync__open_signal,    lasync__close_signal,     NULL},
  {"stream",    lasync__open_stream,    NULL,                     NULL},
  {"process",   lasync__open_process,   lasync__close_processes,  NULL},
  {"thread",    lasync__open_thread,    NULL,                     NULL},
  {NULL, NULL, NULL, NULL}
};
