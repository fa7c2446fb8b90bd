-- Spec helpers: await inside `it` blocks, and run programs as subprocesses.
--
--   local helper = require("spec.helper")
--   local async = helper.async
--   helper.it("sleeps", function() async.sleep(0.01) end)
--
-- helper.it(name, fn) defines a busted `it` whose body runs as the main task of a fresh
-- `async.run`, under a hard time limit (default 10 s). After the run it checks that no task
-- is left alive. helper.run(fn, ...) does the same for use inside a plain `it`.
--
-- Subprocesses (for the interpreter, plain lua5.4, warnings and signals):
--   helper.sh(cmd [, stdin])          -> {stdout =, stderr =, code =} (code: exit status,
--                                        128 + n when killed by signal n)
--   helper.lasync(argstring [, stdin]) runs build/lasync with the given (shell) arguments
--   helper.lua(code [, flags])        runs plain lua5.4 with package.path/cpath at the checkout
--   helper.lua_command(code [, flags]) the command helper.lua runs, and the script's path
--   helper.script(text)               writes text to a temporary file, returns its path
--   helper.signal_run(cmd, sig, ...)   starts cmd with default signal dispositions, waits until
--                                        its stdout contains "READY", sends the signal
--   helper.q(s)                        shell-quotes s
-- Environment: LASYNC_BUILD (build tree, default "build"), LASYNC_VALGRIND (scales latency bounds).
local async = require("lasync")

local M = { async = async }

-- a test that runs longer than this hangs (valgrind runs everything about 20-50x slower)
local LIMIT = os.getenv("LASYNC_VALGRIND") and 60 or 10

function M.run(fn, ...)
  local args = table.pack(...)
  local results = table.pack(async.run(function()
    return async.timeout(LIMIT, fn, table.unpack(args, 1, args.n))
  end))
  collectgarbage()
  collectgarbage()
  local live = async.tasks()
  assert(#live == 0, "tasks still alive after run: " .. #live)
  return table.unpack(results, 1, results.n)
end

function M.it(name, fn)
  -- busted's `it` lives in the spec file's environment, not in _G; its public API is
  -- reachable through require("busted") once busted is running
  local busted_it = rawget(_G, "it") or require("busted").it
  return busted_it(name, function() M.run(fn) end)
end

-- {======  small utilities  ======}

-- this process's resident set size, in KiB
function M.rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s+(%d+)"))
end

-- `file:line` of the caller's current line (level 2), as it appears in tracebacks
function M.here(level)
  local info = debug.getinfo((level or 1) + 1, "Sl")
  return info.short_src .. ":" .. info.currentline
end

-- s mentions the location `file:line` (not as a prefix of a longer line number)
function M.has_loc(s, loc)
  if type(s) ~= "string" then return false end
  local pat = loc:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0") .. "%f[%D]"
  return s:find(pat) ~= nil
end

-- list contains value (raw equality)
function M.contains(list, value)
  for i = 1, #list do
    if rawequal(list[i], value) then return true end
  end
  return false
end

-- count plain (non-pattern) occurrences of needle in s
function M.count(s, needle)
  local n, init = 0, 1
  while true do
    local i, j = s:find(needle, init, true)
    if not i then return n end
    n, init = n + 1, j + 1
  end
end

-- an object whose __close appends `label` to log
function M.closer(log, label)
  return setmetatable({}, {
    __close = function()
      log[#log + 1] = label
    end,
  })
end

-- {======  subprocesses  ======}

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.readfile = readfile  -- the content of a file, or nil

-- A fresh path in the temp directory ending in ext (".json", ".html"): nothing is there yet
function M.tmpfile(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. (ext or "")
end

function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

M.ROOT = (function()
  local p = io.popen("pwd")
  local dir = p:read("l")
  p:close()
  return dir
end)()

-- `make check-asan` points LASYNC_BUILD at its own build tree
M.BUILD = os.getenv("LASYNC_BUILD") or "build"
if M.BUILD:sub(1, 1) ~= "/" then M.BUILD = M.ROOT .. "/" .. M.BUILD end
M.LASYNC = M.BUILD .. "/lasync"

-- under valgrind (`make check-valgrind` sets LASYNC_VALGRIND) everything runs ~20-50x slower:
-- the few latency bounds are scaled by this factor
M.SLOWDOWN = os.getenv("LASYNC_VALGRIND") and 20 or 1

local tmpfiles = {}

function M.script(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  tmpfiles[#tmpfiles + 1] = path
  return path
end

-- Under `make check-asan` this process runs with the ASan runtime in LD_PRELOAD. Shell tools,
-- compilers and luarocks must not inherit it (LeakSanitizer would fail them at exit), so
-- subprocesses start without it; plain lua5.4 loading the instrumented core.so gets it back.
local PRELOAD = os.getenv("LD_PRELOAD")

local function unpreloaded(shell_code)
  return "exec env -u LD_PRELOAD sh -c " .. M.q(shell_code)
end

-- Runs `cmd` through /bin/sh with stdout and stderr captured. `timeout` keeps a broken
-- program from hanging the suite (exit 124 then).
function M.sh(cmd, stdin)
  local out, err = os.tmpname(), os.tmpname()
  local inp = stdin and M.script(stdin) or "/dev/null"
  local full = unpreloaded(string.format("(%s) <%s >%s 2>%s", cmd, inp, out, err))
  local _, how, code = os.execute(full)
  local r = {
    stdout = readfile(out) or "",
    stderr = readfile(err) or "",
    code = how == "signal" and 128 + code or code,
  }
  os.remove(out)
  os.remove(err)
  if stdin then os.remove(inp) end
  return r
end

-- build/lasync with shell-level arguments, under a 30 s guard
function M.lasync(args, stdin)
  return M.sh("timeout 30 " .. M.q(M.LASYNC) .. " " .. (args or ""), stdin)
end

-- plain lua5.4 with the checkout's lua/ and build/lib on its paths (absolute, so cwd does
-- not matter), running `code`
-- lua_command(code [, flags]) -> a shell command that runs code with plain lua5.4 (package.path
-- and package.cpath at the checkout), and the script's path (remove it afterwards)
function M.lua_command(code, flags)
  local prelude = string.format(
    "package.path=%q..package.path package.cpath=%q..package.cpath ",
    M.ROOT .. "/lua/?.lua;" .. M.ROOT .. "/lua/?/init.lua;",
    M.BUILD .. "/lib/?.so;")
  local path = M.script(prelude .. code)
  local env = PRELOAD and ("env LD_PRELOAD=" .. M.q(PRELOAD) .. " ") or ""
  return env .. "lua5.4 " .. (flags or "") .. " " .. M.q(path), path
end

function M.lua(code, flags)
  local cmd, path = M.lua_command(code, flags)
  local r = M.sh("timeout 30 " .. cmd)
  os.remove(path)
  return r
end

-- Starts `cmd` in the background with SIGINT/SIGQUIT at their default dispositions (a
-- non-interactive shell would start it with them ignored), waits until its stdout contains
-- READY, sends `sig`, then waits for it to exit (killing it after `grace` seconds).
function M.signal_run(cmd, sig, grace)
  local out, err = os.tmpname(), os.tmpname()
  local script = string.format([[
env --default-signal=INT,QUIT %s </dev/null >%s 2>%s &
pid=$!
i=0
while ! grep -q READY %s 2>/dev/null; do
  i=$((i+1)); if [ $i -gt 400 ]; then break; fi
  sleep 0.025
done
kill -%s $pid
( sleep %d; kill -KILL $pid 2>/dev/null ) &
wd=$!
wait $pid
status=$?
kill $wd 2>/dev/null
exit $status
]], cmd, out, err, out, sig, grace or 15)
  local _, how, code = os.execute(unpreloaded(script))
  local r = {
    stdout = readfile(out) or "",
    stderr = readfile(err) or "",
    code = how == "signal" and 128 + code or code,
  }
  os.remove(out)
  os.remove(err)
  return r
end

-- {====== waiting in specs (sync, queues, rate limiter, HTTP) ======}
-- settle(turns): lets every ready task run, several turns over (no timing involved)
-- started(fn, ...): spawns fn and lets it run up to its first suspension
-- finish(t [, secs]): awaits t, failing instead of hanging after secs (default 3)
-- expect_cancelled(t [, secs]), expect_timeout(secs, fn, ...), expect_kind(kind, fn, ...),
-- expect_plain_error(names, fn, ...), completes_without_suspending(fn, ...)
-- (luassert's assert: busted gives it to spec files, not to the modules they require)
local assert = require("luassert")

function M.settle(turns)
  for _ = 1, turns or 30 do async.yield() end
end

function M.started(fn, ...)
  local t = async.spawn(fn, ...)
  async.yield()
  return t
end

function M.finish(t, secs)
  return async.timeout(secs or 3, t.await, t)
end

function M.expect_cancelled(t, secs)
  local ok, err = pcall(M.finish, t, secs)
  assert.is_false(ok, "the task finished normally")
  assert.is_true(async.is_cancelled(err), "expected Cancelled, got " .. tostring(err))
end

function M.expect_timeout(secs, fn, ...)
  local ok, err = pcall(async.timeout, secs, fn, ...)
  assert.is_false(ok, "did not wait")
  assert.is_true(async.is_timeout(err), "expected a timeout, got " .. tostring(err))
end

-- fn(...) raises an error object of `kind`
function M.expect_kind(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected a " .. kind .. " error")
  assert.is_table(err, "expected an error object, got " .. tostring(err))
  assert.equal(kind, err.kind, tostring(err))
  return err
end

function M.expect_plain_error(names, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  assert.is_string(err, "expected a plain string error, got " .. tostring(err))
  local low = err:lower()
  for _, n in ipairs(names) do
    if low:find(n:lower(), 1, true) then return err end
  end
  error("error message does not mention " .. table.concat(names, "/") .. ": " .. err, 2)
end

function M.completes_without_suspending(fn, ...)
  local args = table.pack(...)
  local t = async.spawn(function()
    assert(async.current_task():cancel("self"))
    local r = table.pack(pcall(fn, table.unpack(args, 1, args.n)))
    local later = pcall(async.sleep, 0)
    return r, later
  end)
  local r, later = t:await()
  assert.is_true(r[1], "the call raised (it suspended and saw the cancellation): " .. tostring(r[2]))
  assert.is_false(later)
  return table.unpack(r, 2, r.n)
end

function M.cleanup()
  for _, p in ipairs(tmpfiles) do os.remove(p) end
  tmpfiles = {}
end

return M
