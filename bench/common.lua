-- bench/common.lua: helpers shared by the Lua benchmark programs (lasync_*, coro_*, luv_*).
--
-- Loaded by each program as
--   local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
-- so the programs work from any directory. Each prints exactly one line starting with "RESULT "
-- followed by key=value pairs, which bench/run.lua parses.
local M = {}

-- Search paths: the benchmark helpers, the lasync Lua modules in the source tree and the built C
-- module, ahead of the system paths (lua-luv lives in the system cpath).
local script = ... or "bench/x.lua"
local dir = script:match("^(.*)/") or "."
local root = dir .. "/.."
package.path = dir .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;"
  .. package.path
package.cpath = root .. "/build/lib/?.so;" .. package.cpath

-- Problem size: the default from the issue, or BENCH_N for quick smoke runs.
function M.size(default)
  return math.tointeger(tonumber(os.getenv("BENCH_N") or "")) or default
end

-- A wall clock. Plain Lua has none finer than a second, so use libuv's monotonic hrtime through
-- luv when it is installed (loading luv only creates an idle loop of its own; it is the same
-- libuv shared library lasync links). Without luv, os.clock() (process CPU time) is the fallback:
-- fine for the CPU-bound spawn/switch runs, wrong for sleeps, so a program that sleeps passes
-- its own fallback (lasync uses async.now()).
local has_luv, uv = pcall(require, "luv")
if has_luv then
  local hrtime = uv.hrtime
  M.clock_name = "hrtime"
  function M.clock() return hrtime() * 1e-9 end
else
  M.clock_name = "cpu"
  M.clock = os.clock
end

function M.wall_clock(fallback, fallback_name)
  if has_luv or not fallback then return M.clock, M.clock_name end
  return fallback, fallback_name
end

-- A field of /proc/self/status in bytes ("VmHWM" = peak RSS, "VmRSS" = current RSS), or nil.
function M.status_bytes(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local kb = text:match(field .. ":%s*(%d+)%s*kB")
  return kb and tonumber(kb) * 1024 or nil
end

-- Live Lua heap in bytes after two full collections (the second one finishes finalizers' garbage).
function M.heap_after_gc()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count") * 1024
end

local function fmt(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if type(v) == "number" then return string.format("%.6g", v) end
  return tostring(v)
end

-- result("spawn", "lasync", {"tasks_per_s", 1e6, "wall_s", 0.2}) prints
-- "RESULT name=spawn impl=lasync tasks_per_s=1e+06 wall_s=0.2"
function M.result(name, impl, fields)
  local parts = { "RESULT", "name=" .. name, "impl=" .. impl }
  for i = 1, #fields, 2 do
    parts[#parts + 1] = fields[i] .. "=" .. fmt(fields[i + 1])
  end
  io.write(table.concat(parts, " "), "\n")
  io.flush()
end

return M
