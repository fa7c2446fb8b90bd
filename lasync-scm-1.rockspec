rockspec_format = "3.0"
package = "lasync"
version = "scm-1"
source = {
  url = "git+file:///dev/null",  -- built from a checkout: luarocks make lasync-scm-1.rockspec
}
description = {
  summary = "Structured concurrency for Lua 5.4 on libuv: tasks, await, gather, timeouts",
  detailed = [[
lasync binds a libuv event loop into Lua coroutines: spawn, await, gather, race, timeouts,
cancellation scopes and task groups, with a C core and a Lua layer.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4",
}
external_dependencies = {
  LIBUV = { header = "uv.h" },
  -- libcurl is linked from the compiler's default paths: Debian keeps its headers under the
  -- multiarch include directory, which luarocks' header probe does not search

}
build = {
  type = "builtin",
  modules = {
    ["lasync.core"] = {
      sources = {
        "csrc/error.c", "csrc/timer.c", "csrc/sched.c", "csrc/task.c", "csrc/scope.c",
        "csrc/waitset.c", "csrc/ops.c", "csrc/req.c", "csrc/subsys.c", "csrc/context.c",
        "csrc/loop.c", "csrc/http.c",
        "csrc/fs.c", "csrc/dns.c", "csrc/signal.c",
        "csrc/stream.c", "csrc/process.c",
        "csrc/thread.c",
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "uv", "curl" },
      incdirs = { "$(LIBUV_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)" },
    },
    ["lasync"] = "lua/lasync/init.lua",
    ["lasync.cli"] = "lua/lasync/cli.lua",
    ["lasync.check"] = "lua/lasync/check.lua",
    ["lasync.context"] = "lua/lasync/context.lua",
    ["lasync.flow"] = "lua/lasync/flow.lua",
    ["lasync.flow_report"] = "lua/lasync/flow_report.lua",
    ["lasync.sync"] = "lua/lasync/sync.lua",
    ["lasync.http"] = "lua/lasync/http.lua",
    ["lasync.fs"] = "lua/lasync/fs.lua",
    ["lasync.dns"] = "lua/lasync/dns.lua",
    ["lasync.signal"] = "lua/lasync/signal.lua",
    ["lasync.stream"] = "lua/lasync/stream.lua",
    ["lasync.process"] = "lua/lasync/process.lua",
  },
}
