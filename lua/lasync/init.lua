-- lasync: structured concurrency for Lua 5.4 on libuv.
--
-- The C core (lasync.core) owns the loop, the scheduler, tasks, futures, timers, cancel scopes
-- and waitsets. This module composes them: gather, wait, race, as_completed, wait_for,
-- timeout/deadline, shield/shielded and TaskGroup. Every combinator owns what it spawns and never
-- returns while a child it cancelled is still running.
local core = require("lasync.core")
local sync = require("lasync.sync")
local check = require("lasync.check")

local M = {}

local pack, unpack = table.pack, table.unpack
local select, type, error, pcall = select, type, error, pcall
local getmetatable, setmetatable = getmetatable, setmetatable
local tostring, rawequal = tostring, rawequal

local spawn_from, scope, waitset, now = core.spawn_from, core.scope, core.waitset, core.now

M.version = core.version
M.run = core.run
M.spawn = core.spawn
M.create_task = core.spawn
M.current_task = core.current_task
M.now = core.now
M.sleep = core.sleep
M.yield = core.yield
M.await = core.await
M.Future = core.Future
M.tasks = core.tasks

-- task-local context (lasync.context)
M.ContextVar = require("lasync.context").ContextVar

-- synchronisation primitives and queues (lasync.sync)
M.Event = sync.Event
M.Lock = sync.Lock
M.Semaphore = sync.Semaphore
M.BoundedSemaphore = sync.BoundedSemaphore
M.Condition = sync.Condition
M.Queue = sync.Queue
M.LifoQueue = sync.LifoQueue
M.PriorityQueue = sync.PriorityQueue
M.RateLimiter = sync.RateLimiter

M.http = require("lasync.http")
M.fs = require("lasync.fs")
M.dns = require("lasync.dns")
M.signal = require("lasync.signal")

-- streams, servers and subprocesses (lasync.stream, lasync.process)
local stream = require("lasync.stream")
M.tcp = stream.tcp
M.unix = stream.unix
M.process = require("lasync.process")

-- fn(...) on libuv's thread pool, in a separate Lua state (csrc/thread.c)
M.to_thread = core.to_thread

-- {====== errors ======}

local new_error = core.new_error  -- (kind, message [, fields]) -> error object
M.new_error = new_error

local function is_kind(e, kind)
  return type(e) == "table" and getmetatable(e) ~= nil and rawequal(e.kind, kind)
end

function M.is_cancelled(e) return is_kind(e, "cancelled") end
function M.is_timeout(e) return is_kind(e, "timeout") end
local is_cancelled = M.is_cancelled

-- {====== awaitables ======}

local task_mt, future_mt = core.task_mt, core.future_mt

local function is_awaitable(x)
  local mt = getmetatable(x)
  return mt ~= nil and (mt == task_mt or mt == future_mt)
end
M.is_awaitable = is_awaitable

-- Turns the arguments of a combinator into awaitables: functions are spawned as tasks (on behalf
-- of the combinator's caller, `level` frames up). `owned` marks what the combinator may cancel.
local function awaitables(fname, list, n, level)
  local out = { n = n }
  for i = 1, n do
    local x = list[i]
    if type(x) == "function" then
      out[i] = spawn_from(level, x)
    elseif is_awaitable(x) then
      out[i] = x
    else
      error(fname .. ": argument #" .. i .. " is a " .. type(x) ..
            ", expected a Task, a Future or a function", level)
    end
  end
  return out
end

local function cancel_pending(list, n, msg)
  for i = 1, n do
    local x = list[i]
    if not x:done() then x:cancel(msg) end
  end
end

-- Waits until every child finished, holding back cancellation of the caller meanwhile (the
-- children were cancelled already, they are unwinding).
local function wait_all_shielded(ws)
  local s = scope(nil, true)
  local ok, err = pcall(ws.wait, ws, "all")
  s:close()
  if not ok then error(err, 0) end
end

-- Runs fn(...) inside a scope with an absolute deadline; returns ok, results... like pcall, but
-- with `false, "timeout"` when this scope's deadline expired.
local function within(deadline, fn, ...)
  local s = scope(deadline, false)
  local r = pack(pcall(fn, ...))
  local mine = s:close(not r[1] and r[2] or nil, true)
  if r[1] then return unpack(r, 1, r.n) end
  if mine and s:expired() then return false, "timeout" end
  return false, r[2]
end

-- {====== gather ======}

local function gather(fname, children, return_errors)
  local n = children.n
  local ws = waitset(children)
  local ok, failed = pcall(ws.wait, ws, return_errors and "all" or "first_failure")
  if not ok then  -- the caller was cancelled (or its deadline expired): so are the children
    cancel_pending(children, n, fname .. ": the awaiting task was cancelled")
    wait_all_shielded(ws)
    ws:close()
    error(failed, 0)
  end
  if failed then
    cancel_pending(children, n, fname .. ": another task failed")
    wait_all_shielded(ws)
    ws:results(true)  -- gather raises one error for all: the others count as observed
    ws:close()
    return children[failed]:result()  -- raises the child's error, unchanged
  end
  local results = ws:results(return_errors)
  ws:close()
  return results
end

local function is_plain_list(x)
  return type(x) == "table" and getmetatable(x) == nil
end

local GATHER = check.spec("async.gather", { return_errors = check.boolean })

function M.gather(...)
  local n = select("#", ...)
  local first = ...
  if n >= 1 and n <= 2 and is_plain_list(first) then
    local opts = check.options(GATHER, (select(2, ...)))
    local list = first
    local children = awaitables("gather", list, #list, 3)
    return gather("gather", children, opts.return_errors)
  end
  local children = awaitables("gather", { ... }, n, 3)
  local results = gather("gather", children, false)
  return unpack(results, 1, n)
end

-- {====== wait, race, as_completed ======}

local WAIT = check.spec("async.wait", {
  return_when = check.oneof("all", "first", "first_error"), timeout = check.seconds,
})

function M.wait(list, opts)
  if not is_plain_list(list) then error("wait: expected a list of tasks", 2) end
  opts = check.options(WAIT, opts)
  local mode = opts.return_when or "all"
  local timeout = opts.timeout
  local children = awaitables("wait", list, #list, 3)
  local ws = waitset(children)
  local how = mode == "first" and "next" or mode
  if timeout then
    local ok, err = within(now() + timeout, ws.wait, ws, how)
    if not ok and err ~= "timeout" then ws:close(); error(err, 0) end
  else
    local ok, err = pcall(ws.wait, ws, how)
    if not ok then ws:close(); error(err, 0) end
  end
  ws:close()
  local done, pending = {}, {}
  for i = 1, children.n do
    local c = children[i]
    if c:done() then done[#done + 1] = c else pending[#pending + 1] = c end
  end
  return done, pending
end

function M.race(...)
  local n = select("#", ...)
  if n == 0 then error("race: expected at least one Task, Future or function", 2) end
  local children = awaitables("race", { ... }, n, 3)
  local ws = waitset(children)
  local ok, first = pcall(ws.next, ws)
  cancel_pending(children, n, ok and "race: another task finished first"
                              or "race: the awaiting task was cancelled")
  wait_all_shielded(ws)
  ws:close()
  if not ok then error(first, 0) end
  return children[first]:result()
end

local AS_COMPLETED = check.spec("async.as_completed", { timeout = check.seconds })

function M.as_completed(list, opts)
  if not is_plain_list(list) then error("as_completed: expected a list of tasks", 2) end
  local timeout = check.options(AS_COMPLETED, opts).timeout
  local children = awaitables("as_completed", list, #list, 3)
  local deadline = timeout and now() + timeout
  local ws = waitset(children)
  local left = children.n
  return function()
    if left == 0 then ws:close(); return nil end
    local ok, i
    if deadline then
      ok, i = within(deadline, ws.next, ws)
      if not ok and i == "timeout" then
        ws:close()
        error(new_error("timeout", "as_completed: timed out after " .. timeout .. " s",
                        { seconds = timeout }), 2)
      end
    else
      ok, i = pcall(ws.next, ws)
    end
    if not ok then ws:close(); error(i, 0) end
    left = left - 1
    return children[i]
  end
end

-- {====== timeouts and shields ======}

local function check_seconds(fname, seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error(fname .. ": seconds must be a number >= 0, got " .. tostring(seconds), 3)
  end
end

function M.timeout(seconds, fn, ...)
  check_seconds("timeout", seconds)
  if type(fn) ~= "function" then error("timeout: expected a function", 2) end
  local s = scope(now() + seconds, false, seconds)
  local r = pack(pcall(fn, ...))
  s:close(not r[1] and r[2] or nil)  -- raises the timeout error if this deadline expired
  if r[1] then return unpack(r, 2, r.n) end
  error(r[2], 0)
end

-- local d <close> = async.deadline(seconds): the rest of the block runs with a deadline.
function M.deadline(seconds)
  check_seconds("deadline", seconds)
  return scope(now() + seconds, false, seconds)
end

-- With seconds <= 0, an x that is done already gives its results (as asyncio's wait_for(fut,
-- 0)); a pending one is cancelled and it times out.
function M.wait_for(x, seconds)
  if type(seconds) ~= "number" or seconds ~= seconds then
    error("wait_for: seconds must be a number, got " .. tostring(seconds), 2)
  end
  if seconds <= 0 and is_awaitable(x) and x:done() then return x:result() end
  if seconds < 0 then seconds = 0 end
  local t = awaitables("wait_for", { x }, 1, 3)
  local ws = waitset(t)
  local ok, err = within(now() + seconds, ws.wait, ws, "all")
  if not ok then
    t[1]:cancel(err == "timeout" and "wait_for: timed out" or "wait_for: the awaiting task was cancelled")
    wait_all_shielded(ws)
    ws:close()
    if err == "timeout" then
      error(new_error("timeout", "wait_for: timed out after " .. seconds .. " s",
                      { seconds = seconds }), 2)
    end
    error(err, 0)
  end
  ws:close()
  return t[1]:result()
end

function M.shielded(fn, ...)
  if type(fn) ~= "function" then error("shielded: expected a function", 2) end
  local s = scope(nil, true)
  local r = pack(pcall(fn, ...))
  s:close()
  if r[1] then return unpack(r, 2, r.n) end
  error(r[2], 0)
end

function M.shield(x)
  if type(x) == "function" then x = spawn_from(2, x) end
  if not is_awaitable(x) then error("shield: expected a Task, a Future or a function", 2) end
  local f = core.Future()
  x:on_done(function(src)
    if f:done() then return end
    if src:cancelled() then
      f:set_error(src:error())
    elseif src:error() ~= nil then
      f:set_error(src:error())
    else
      f:set_result(src:result())
    end
  end)
  return f
end

-- {====== TaskGroup ======}

local TaskGroup = {}
TaskGroup.__index = TaskGroup
TaskGroup.__name = "lasync.TaskGroup"

function M.TaskGroup()
  local owner = core.current_task()
  if owner == nil then error("TaskGroup: must be created inside a task", 2) end
  local g = setmetatable({
    owner = owner,
    scope = scope(nil, false),  -- the block's own code: cancelled when a child fails
    children = {},
    errors = {},
    closed = false,
  }, TaskGroup)
  return g
end

local function group_fail(g, err)
  g.errors[#g.errors + 1] = err
  if not g.failing then
    g.failing = true
    g.scope:cancel("TaskGroup: a task in the group failed")
    cancel_pending(g.children, #g.children, "TaskGroup: a task in the group failed")
  end
end

function TaskGroup:spawn(fn, ...)
  if getmetatable(self) ~= TaskGroup then error("TaskGroup:spawn: call it as g:spawn(fn, ...)", 2) end
  if self.closed then error("TaskGroup:spawn: the group is closed", 2) end
  local t = spawn_from(2, fn, ...)
  self.children[#self.children + 1] = t
  if self.failing then t:cancel("TaskGroup: a task in the group failed") end
  t:on_done(function(child)
    if child:cancelled() then return end  -- cancelled by the group or by someone else
    local err = child:error()
    if err ~= nil then group_fail(self, err) end
  end)
  return t
end

local function group_close(g, block_err)
  if g.closing then return end
  g.closing = true
  local mine = false
  if block_err ~= nil then
    -- the block raised: its own error, or the Cancelled this group's scope caused
    mine = g.scope:close(block_err)
    if not mine then  -- any error leaving the block cancels the children
      if not is_cancelled(block_err) then table.insert(g.errors, 1, block_err) end
      if not g.failing then
        g.failing = true
        cancel_pending(g.children, #g.children, "TaskGroup: the block raised an error")
      end
    end
  else
    g.scope:close()
  end
  -- wait for every child, also those that children spawn into the group meanwhile
  local ok, err = true, nil
  local waited = 0
  while waited < #g.children do
    local n = #g.children
    local ws = waitset(table.move(g.children, 1, n, 1, {}))
    if ok then
      ok, err = pcall(ws.wait, ws, "all")
      if not ok then  -- the owner was cancelled while waiting: cancel the children, still wait
        g.failing = true
        cancel_pending(g.children, #g.children, "TaskGroup: the owning task was cancelled")
      end
    end
    if not ok then wait_all_shielded(ws) end
    ws:close()
    waited = n
  end
  g.closed = true
  local errors = g.errors
  if #errors == 1 then error(errors[1], 0) end
  if #errors > 1 then
    local msgs = {}
    for i, e in ipairs(errors) do msgs[i] = tostring(e) end
    error(new_error("group", #errors .. " errors in a TaskGroup: " .. table.concat(msgs, "; "),
                    { errors = errors }), 0)
  end
  if not ok then error(err, 0) end
  if block_err ~= nil and not mine then error(block_err, 0) end
end

function TaskGroup:wait() group_close(self, nil) end
TaskGroup.__close = group_close

-- {====== map: a bounded worker pool in one call ======}

-- async.map(fn, list, {concurrency = n, return_errors = bool}) -> {n = #list, fn(list[i], i)...}
local MAP = check.spec("async.map", { concurrency = check.count, return_errors = check.boolean })

function M.map(fn, list, opts)
  if type(fn) ~= "function" then error("map: expected a function, got " .. type(fn), 2) end
  if not is_plain_list(list) then error("map: expected a list, got " .. type(list), 2) end
  opts = check.options(MAP, opts)
  local n = #list
  local concurrency = math.tointeger(opts.concurrency) or n
  local return_errors = opts.return_errors
  local results = { n = n }
  local next_index, failed = 0, false
  local function worker()
    while not failed do
      local i = next_index + 1
      if i > n then return end
      next_index = i
      local ok, v = pcall(fn, list[i], i)
      if ok then
        results[i] = v
      elseif return_errors and not (is_cancelled(v) and core.cancelling()) then
        results[i] = v  -- fn's error, also a Cancelled of its own (not the worker's)
      else
        failed = true  -- no new item starts; gather cancels the running ones
        error(v, 0)
      end
    end
  end
  local workers = { n = math.min(concurrency, n) }
  for w = 1, workers.n do workers[w] = spawn_from(2, worker) end
  gather("map", workers, false)
  return results
end

-- {====== generators that await ======}

local TAG = core.TAG
local resume, yield, create = coroutine.resume, coroutine.yield, coroutine.create

-- Like coroutine.wrap, but the generator may await: runtime suspensions pass through to the
-- task, other yields come back to the caller as usual.
function M.wrap(fn)
  if type(fn) ~= "function" then error("wrap: expected a function", 2) end
  local co = create(fn)
  core.passthrough(co)
  local function step(r)
    while r[1] and r[2] == TAG do
      r = pack(resume(co, yield(TAG)))
    end
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
  return function(...)
    return step(pack(resume(co, ...)))
  end
end

-- {====== running a program ======}

-- "lasync: msg" on stderr (also the interpreter's, lasync.cli)
local function report(msg)
  io.stderr:write("lasync: ", msg, "\n")
  io.stderr:flush()
end
M._report = report

local function print_failure(task, err)
  report(task and task:traceback() or tostring(err))
end

-- How the interpreter (lasync.cli) runs a script, shared with async.main: body(...) runs as the
-- main task of async.run; Ctrl-C cancels it, unless on_interrupt (if given) returns true (it
-- handled the Ctrl-C itself, as the REPL does); Ctrl-\ writes async.dump() to stderr. A failure
-- is written to stderr as "lasync: " and the main task's traceback. Returns the exit status (0;
-- 1 on failure; 130 after Ctrl-C) and, for 0, {true, body's results..., n =}.
function M._run_main(body, on_interrupt, ...)
  local main_task, interrupted
  local r = pack(pcall(core.run, function(...)
    main_task = core.current_task()
    core.interrupts_on(function()
      if on_interrupt and on_interrupt() then return end
      interrupted = true
      main_task:cancel("interrupted (SIGINT)")
    end, function()
      io.stderr:write(M.dump())
      io.stderr:flush()
    end)
    return body(...)
  end, ...))
  core.interrupts_off()
  io.stdout:flush()
  if interrupted then  -- Ctrl-C: 130, however the main task ended
    if not r[1] and not is_cancelled(r[2]) then print_failure(main_task, r[2]) end
    report("interrupted")
    return 130
  end
  if r[1] then return 0, r end
  print_failure(main_task, r[2])
  return 1
end

-- async.main(fn, ...) -> fn's results: async.run for a program's main function in a plain
-- lua5.4 script. A failure is printed as the interpreter prints it ("lasync: " and the main
-- task's traceback) and the process exits with status 1; Ctrl-C cancels the main task, and
-- once it has unwound the process exits with status 130.
function M.main(fn, ...)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("main: expected a function, got " .. type(fn), 2)
  end
  -- already inside a task (a script run by the lasync interpreter, say): a plain call, so
  -- that one script runs unchanged under lua5.4 and lasync
  if M.current_task() then return fn(...) end
  local status, r = M._run_main(fn, nil, ...)
  if status ~= 0 then os.exit(status, true) end
  return unpack(r, 2, r.n)
end

-- {====== introspection ======}

local function suspended_at(co)
  if co == nil then return nil end
  for level = 0, 50 do
    local info = debug.getinfo(co, level, "Sl")
    if info == nil then break end
    if info.what ~= "C" and info.currentline and info.currentline > 0
       and not info.short_src:find("lasync/init.lua", 1, true) then
      return info.short_src .. ":" .. info.currentline
    end
  end
  return nil
end

-- async.flow is lasync.flow, loaded when first used (it requires this module)
setmetatable(M, { __index = function(t, k)
  if k == "flow" then
    local flow = require("lasync.flow")
    rawset(t, "flow", flow)
    return flow
  end
  return nil
end })

function M.dump()
  local lines = {}
  local list = core.tasks()
  lines[1] = ("%d live task(s)"):format(#list)
  for _, t in ipairs(list) do
    local state, op, co, site = t:_info()
    local at = suspended_at(co)
    lines[#lines + 1] = ("  %s: %s%s, spawned at %s%s"):format(
      t:name(), state, op and (" (" .. op .. ")") or "", site, at and (", at " .. at) or "")
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
