-- lasync.signal: Unix signals for tasks (also `async.signal`).
--
--   async.signal.wait("SIGTERM")                       -- suspends until SIGTERM arrives
--   local h = async.signal.on("SIGHUP", reload)        -- reload() runs in a new task each time
--   h:close()
--
-- Watchers are uv_signal_t handles (csrc/signal.c). While a signal is watched, libuv's handler
-- replaces the default action (SIGINT no longer kills the process, ...); when the last watcher
-- of a signal closes, the disposition in place before the first one comes back (the
-- interpreter's Ctrl-C handling included).
local core = require("lasync.core")

local M = {}

local type, error, setmetatable, tostring = type, error, setmetatable, tostring
local watch, spawn, number = core.signal_watch, core.spawn, core.signal_number

-- checks the signal name of a public function (argument errors point at its caller)
local function checkname(fname, name)
  if type(name) ~= "string" then
    error(("bad argument #1 to '%s' (string expected, got %s)"):format(fname, type(name)), 3)
  end
  local n = number(name)
  if n == nil then
    error(("bad argument #1 to '%s' (unknown signal '%s')"):format(fname, name), 3)
  end
  if fname ~= "raise" and (n == number("SIGKILL") or n == number("SIGSTOP")) then
    error(("bad argument #1 to '%s' (%s cannot be caught)"):format(fname, name), 3)
  end
  if fname ~= "raise" and (n == number("SIGSEGV") or n == number("SIGBUS") or n == number("SIGFPE")
      or n == number("SIGILL")) then
    error(("bad argument #1 to '%s' (%s is a fault signal: it cannot be watched)"):format(fname,
      name), 3)
  end
end

-- wait(name) -> name: suspends the calling task until the signal arrives
function M.wait(name)
  checkname("wait", name)
  local w <close> = watch(name)
  w:wait()
  return name
end

local Handle = {}
Handle.__index = Handle
Handle.__name = "lasync.signal.Handle"

function Handle:close()
  if self._watcher then
    self._watcher:close()
    self._task:cancel()
    self._watcher, self._task = nil, nil
  end
end
Handle.__close = Handle.close

function Handle:closed()
  return self._watcher == nil
end

function Handle:__tostring()
  return "lasync.signal.Handle (" .. self.signal .. (self._watcher and "" or ", closed") .. ")"
end

-- on(name, fn) -> handle: fn(name) runs in a new task each time the signal arrives
function M.on(name, fn)
  checkname("on", name)
  if type(fn) ~= "function" then
    error("bad argument #2 to 'on' (function expected, got " .. type(fn) .. ")", 2)
  end
  local w = watch(name)
  local t = spawn(function()
    local _ <close> = w
    while true do
      local n = w:wait()
      if n == nil then return end
      for _ = 1, n do spawn(fn, name) end
    end
  end)
  t:set_name("signal.on " .. tostring(name))
  return setmetatable({ signal = name, _watcher = w, _task = t }, Handle)
end

-- raise(name): sends the signal to this process
function M.raise(name)
  checkname("raise", name)
  return core.signal_raise(name)
end

return M
