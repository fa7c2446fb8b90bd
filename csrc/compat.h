/*
** compat.h: version differences of Lua and libuv, in one place. Call sites never test versions.
*/
#ifndef LASYNC_COMPAT_H
#define LASYNC_COMPAT_H

#include <uv.h>
#include "lua.h"

#define LASYNC_UV_GEQ(maj, min, pat) \
  (UV_VERSION_HEX >= (((maj) << 16) | ((min) << 8) | (pat)))

/* lua_resetthread became lua_closethread in 5.4.6. */
#if LUA_VERSION_RELEASE_NUM >= 50406
#define lasync__closethread(co, L) lua_closethread((co), (L))
#else
#define lasync__closethread(co, L) ((void)(L), lua_resetthread(co))
#endif

/* Below libuv 1.48, a 0 ms timer re-armed from a timer callback runs again in the same pass
** (libuv #4245): use 1 ms there. */
#if LASYNC_UV_GEQ(1, 48, 0)
#define LASYNC_ZERO_TIMER_MS 0
#else
#define LASYNC_ZERO_TIMER_MS 1
#endif

#endif
