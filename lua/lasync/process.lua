-- lasync.process: subprocesses. spawn{cmd, args..., options} -> Process (stdio pipes are
-- Streams); run{...} -> {code=, signal=, stdout=, stderr=} like Python's subprocess.run.
--
-- The child is reaped by libuv whether or not a task waits for it (csrc/process.c), so a
-- cancelled wait leaves no zombie. run terminates its child when it is cancelled or times out:
-- SIGTERM, then SIGKILL after a grace period, and waits for it.
local core = require("lasync.core")
local stream = require("lasync.stream")
local check = require("lasync.check")

local M = {}

local type, error, pcall, tostring, setmetatable = type, error, pcall, tostring, setmetatable
local getmetatable, pairs, ipairs, concat = getmetatable, pairs, ipairs, table.concat
local with_timeout = stream._with_timeout
local new_error = core.new_error

local MODES = { pipe = true, inherit = true, null = true }
local SPAWN = check.array(check.spec("process.spawn", {
  stdin = check.string, stdout = check.string, stderr = check.string,
  env = check.type("a table of name = value", function(v)
    if type(v) ~= "table" then return false end
    for k, x in pairs(v) do
      if type(k) ~= "string" or (type(x) ~= "string" and type(x) ~= "number") then return false end
    end
    return true
  end),
  clear_env = check.boolean, cwd = check.string, input = check.string,
}))
local RUN = check.array(check.spec("process.run", SPAWN, { timeout = check.seconds,
                                                          grace = check.seconds }))

local function is_kind(e, kind)
  return type(e) == "table" and getmetatable(e) ~= nil and e.kind == kind
end

local Process = {}
Process.__index = Process
Process.__name = "lasync.Process"

-- Checks a spawn{...} table and turns it into core.process_spawn's argv and options.
local function prepare(spec, opts)
  local fname = spec.fname
  if type(opts) ~= "table" then
    error(fname .. ": expected a table {cmd, arg1, ..., option = value}, got " .. type(opts), 3)
  end
  check.options(spec, opts, 3)
  local argv = {}
  for i = 1, #opts do
    local a = opts[i]
    if math.type(a) == "integer" then a = tostring(a) end
    if type(a) ~= "string" then
      error(("%s: argument %d of the command must be a string, got %s"):format(fname, i, type(a)), 3)
    end
    argv[i] = a
  end
  if #argv == 0 then error(fname .. ": the command is missing ({cmd, arg1, ...})", 3) end
  local o = { stdout = opts.stdout, stderr = opts.stderr, env = opts.env, cwd = opts.cwd,
              clear_env = opts.clear_env and true or nil }
  local stdin = opts.stdin
  if type(stdin) == "string" and not MODES[stdin] then  -- data for the child's stdin
    o.stdin, o.input = "pipe", stdin
  else
    o.stdin = stdin
  end
  if opts.input ~= nil then
    if stdin ~= nil and stdin ~= "pipe" then error(fname .. ": input and stdin both given", 3) end
    o.stdin, o.input = "pipe", opts.input
  end
  for _, name in pairs({ "stdout", "stderr" }) do
    local v = o[name]
    if v ~= nil and not MODES[v] then
      error(('%s: option \'%s\' must be "pipe", "inherit" or "null" (read a pipe to capture output),'
             .. ' got "%s"'):format(fname, name, v), 3)
    end
  end
  return argv, o
end

local function spawn(argv, o)
  local ud, pid, sin, sout, serr = core.process_spawn(argv, o)
  return setmetatable({ pid = pid, stdin = not o.input and sin or nil, stdout = sout,
                        stderr = serr, _p = ud, _feed = o.input and sin or nil, _cmd = argv[1] },
                      Process)
end

function M.spawn(opts)
  return spawn(prepare(SPAWN, opts))
end

-- p:wait() -> code, signal (code is nil when a signal ended the child; signal is its name)
function Process:wait()
  local code, sig = self._p:wait()
  self.code, self.signal = code, sig
  return code, sig
end

-- p:kill([signal]) -> true if sent, false if the child already exited (default "SIGTERM")
function Process:kill(sig)
  return self._p:kill(sig)
end

-- p:exited() -> exited, code, signal (without waiting)
function Process:exited()
  return self._p:status()
end

local function close_pipes(p)
  -- the outputs first: a child blocked writing to a pipe nobody reads would never take in
  -- the rest of its stdin, and closing stdin waits for that flush
  for _, k in ipairs({ "stdout", "stderr", "stdin", "_feed" }) do
    local s = p[k]
    if s and not s:closed() then pcall(s.close, s) end  -- a cancellation closes at once too
  end
end

-- p:close(): closes the pipes and waits for the child to exit; if that wait is cancelled, the
-- child is killed (SIGKILL) and still reaped. Also the <close> of a Process.
function Process:close()
  close_pipes(self)
  local ok, err = pcall(self.wait, self)
  if not ok then
    if is_kind(err, "cancelled") then self._p:kill("SIGKILL") end
    error(err, 0)
  end
end
Process.__close = Process.close

function Process:__tostring()
  return ("lasync.Process (%s, pid %d)"):format(self._cmd, self.pid)
end

-- SIGTERM, up to `grace` seconds for the child to exit, then SIGKILL; waits for it. Runs
-- shielded from the caller's cancellation.
local function terminate(async, p, grace)
  if p:kill("SIGTERM") then
    if not pcall(async.timeout, grace, p.wait, p) then
      p:kill("SIGKILL")
    end
  end
  p:wait()
end

local function drain(s, acc)
  while true do
    local chunk = s:read()
    if chunk == nil then return end
    acc[#acc + 1] = chunk
  end
end

local function collect(async, p, out, err)
  local readers = {}
  if p.stdout then readers[#readers + 1] = function() drain(p.stdout, out) end end
  if p.stderr then readers[#readers + 1] = function() drain(p.stderr, err) end end
  async.gather(readers)
  return p:wait()
end

function M.run(opts)
  local argv, o = prepare(RUN, opts)
  local timeout, grace = opts.timeout, opts.grace or 5
  if o.stdout == nil then o.stdout = "pipe" end
  if o.stderr == nil then o.stderr = "pipe" end
  if o.stdin == nil then o.stdin = "null" end
  local async = require("lasync")
  local p = spawn(argv, o)
  local out, err = {}, {}
  local ok, code, sig = pcall(with_timeout, timeout, collect, async, p, out, err)
  if not ok then
    async.shielded(terminate, async, p, grace)
    close_pipes(p)
    if is_kind(code, "timeout") then
      error(new_error("timeout", ("process.run: '%s' did not finish within %g s"):format(argv[1],
        timeout), { seconds = timeout, stdout = concat(out), stderr = concat(err),
                    code = p.code, signal = p.signal, pid = p.pid }), 2)
    end
    error(code, 0)
  end
  close_pipes(p)
  return { code = code, signal = sig, stdout = concat(out), stderr = concat(err), pid = p.pid }
end

return M
