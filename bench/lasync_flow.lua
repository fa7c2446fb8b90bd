-- flow, lasync: the cost of lasync.flow's tracked calls.
--
--   lua5.4 bench/lasync_flow.lua call|spawn|untracked|log|mem|trace
--     call:      100,000 tracked calls (inside a session, previews on) of a node returning at once
--     spawn:     N `async.spawn(fn, i):await()` of the same function: the untracked peer
--     untracked: N calls of the node outside any session (its policy only)
--     log:       as call, with the JSON-lines log on (written and flushed per event)
--     mem:       heap bytes per recorded call, 100,000 calls with previews off
--     trace:     seconds run:save_trace takes for 100,000 recorded calls
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local flow = require("lasync.flow")
local mode = arg[1] or "call"

local function work(i) return i end
local node = flow.node("work", work)
local quiet = flow.node("work", work, { capture = false })

local function per_call(n, fn)
  fn(1000)  -- warm up
  collectgarbage("collect")
  local t0 = B.clock()
  fn(n)
  return (B.clock() - t0) / n
end

local function main()
  if mode == "call" or mode == "log" then
    local N = B.size(100000)  -- (the issue's scale; the records of more calls cost more GC)
    local log = mode == "log" and os.tmpname() or nil
    local run <close> = flow.session{ log = log }
    local t = per_call(N, function(n) for i = 1, n do node(i) end end)
    assert(#run.calls == N + 1000 and run.calls[N].status == "ok", "calls were not recorded")
    if log then os.remove(log) end
    B.result("flow_call", mode == "log" and "lasync-log" or "lasync",
      { "us_per_call", t * 1e6, "n", N, "clock", B.clock_name })
  elseif mode == "spawn" then
    local N = B.size(100000)
    local t = per_call(N, function(n)
      for i = 1, n do assert(async.spawn(work, i):await() == i) end
    end)
    B.result("flow_call", "spawn_await", { "us_per_call", t * 1e6, "n", N, "clock", B.clock_name })
  elseif mode == "untracked" then
    local N = B.size(100000)
    local t = per_call(N, function(n) for i = 1, n do node(i) end end)
    B.result("flow_call", "lasync-untracked",
      { "us_per_call", t * 1e6, "n", N, "clock", B.clock_name })
  elseif mode == "mem" then
    local N = B.size(100000)
    local run <close> = flow.session{}
    quiet(0)  -- the lane and the node's first record exist before the baseline
    local before = B.heap_after_gc()
    for i = 1, N do quiet(i) end
    local after = B.heap_after_gc()
    assert(#run.calls == N + 1)
    B.result("flow_mem", "lasync", { "bytes_per_call", (after - before) / N, "n", N })
  elseif mode == "trace" then
    local N = B.size(100000)
    local run <close> = flow.session{}
    for i = 1, N do node(i) end
    local path = os.tmpname()
    local t0 = B.clock()
    run:save_trace(path)
    local t = B.clock() - t0
    local f = assert(io.open(path))
    local size = f:seek("end")
    f:close()
    os.remove(path)
    B.result("flow_trace", "lasync", { "trace_s", t, "bytes", size, "n", N, "clock", B.clock_name })
  else
    error("unknown mode " .. tostring(mode))
  end
end

if async.current_task() then main() else async.run(main) end
