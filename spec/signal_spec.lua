-- async.signal: Unix signals for tasks. The in-process specs send SIGUSR1/SIGUSR2 to this
-- process (async.signal.raise) only while a watcher is active; the interpreter specs send
-- SIGINT/SIGTERM to a child.
local helper = require("spec.helper")
local async = helper.async
local signal = async.signal

local q = helper.q

-- waits (bounded) until cond() is true
local function eventually(cond)
  local deadline = async.now() + 5 * helper.SLOWDOWN
  while not cond() do
    assert(async.now() < deadline, "condition not reached in time")
    async.sleep(0.005)
  end
end

describe("async.signal", function()
  helper.it("wait suspends until the signal arrives and returns its name", function()
    local t = helper.started(signal.wait, "SIGUSR1")
    helper.settle(5)
    assert.is_false(t:done())
    signal.raise("SIGUSR1")
    assert.equal("SIGUSR1", helper.finish(t))
  end)

  helper.it("several tasks may wait for the same signal; each gets it", function()
    local a = helper.started(signal.wait, "USR2")
    local b = helper.started(signal.wait, "SIGUSR2")
    signal.raise("SIGUSR2")
    assert.equal("USR2", helper.finish(a))
    assert.equal("SIGUSR2", helper.finish(b))
  end)

  helper.it("a wait is cancellable", function()
    local t = helper.started(signal.wait, "SIGUSR1")
    t:cancel()
    helper.expect_cancelled(t)
    helper.expect_timeout(0.01, signal.wait, "SIGUSR1")
  end)

  helper.it("on runs the function in a new task for each delivery, until closed", function()
    local calls, tasks = {}, {}
    local h = signal.on("SIGUSR1", function(name)
      calls[#calls + 1] = name
      tasks[async.current_task()] = true
    end)
    for i = 1, 3 do
      signal.raise("SIGUSR1")
      eventually(function() return #calls == i end)
    end
    assert.same({ "SIGUSR1", "SIGUSR1", "SIGUSR1" }, calls)
    local n = 0
    for _ in pairs(tasks) do n = n + 1 end
    assert.equal(3, n)
    assert.is_false(h:closed())
    h:close()
    assert.is_true(h:closed())
    h:close()  -- closing twice is harmless
    -- another watcher keeps SIGUSR1 caught; the closed handle's function no longer runs
    local w = helper.started(signal.wait, "SIGUSR1")
    signal.raise("SIGUSR1")
    helper.finish(w)
    helper.settle(10)
    assert.equal(3, #calls)
  end)

  helper.it("a handle works as a <close> variable; handlers still open at the end are closed", function()
    local got = 0
    do
      local _ <close> = signal.on("SIGUSR2", function() got = got + 1 end)
      signal.raise("SIGUSR2")
      eventually(function() return got == 1 end)
    end
    signal.on("SIGUSR2", function() end)  -- never closed: async.run closes it at the end
  end)

  helper.it("a handler that fails affects only its own task: later deliveries still run", function()
    local n = 0
    local h <close> = signal.on("SIGUSR1", function()
      n = n + 1
      error("handler failure " .. n)
    end)
    for i = 1, 2 do
      signal.raise("SIGUSR1")
      eventually(function() return n == i end)
    end
    assert.is_false(h:closed())
  end)

  helper.it("tasks still waiting for signals (and names) when the run ends are cancelled", function()
    async.spawn(signal.wait, "SIGUSR1")
    signal.on("SIGUSR2", function() end)
    async.spawn(async.dns.resolve, "localhost")
    async.yield()
  end)

  helper.it("bad arguments raise plain errors", function()
    helper.expect_plain_error({ "unknown signal" }, signal.wait, "SIGNOPE")
    helper.expect_plain_error({ "string expected" }, signal.wait, 15)
    helper.expect_plain_error({ "cannot be caught" }, signal.on, "SIGKILL", function() end)
    helper.expect_plain_error({ "function expected" }, signal.on, "SIGUSR1", nil)
    helper.expect_plain_error({ "unknown signal" }, signal.raise, "NOPE")
    for _, name in ipairs({ "SIGSEGV", "BUS", "SIGFPE", "SIGILL" }) do
      helper.expect_plain_error({ "fault signal" }, signal.wait, name)
      helper.expect_plain_error({ "fault signal" }, signal.on, name, function() end)
    end
  end)

  it("the disposition before the first watcher comes back when the last one closes", function()
    -- SIGHUP starts ignored (as under nohup): once its watchers are closed it is ignored again
    local path = helper.script(string.format([[
package.path = %q .. package.path
package.cpath = %q .. package.cpath
local async = require("lasync")
async.run(function()
  async.signal.raise("SIGHUP")
  print("ignored")
  local a = async.signal.on("SIGHUP", function() end)
  local b = async.signal.on("SIGHUP", function() end)
  a:close()
  b:close()
  async.signal.raise("SIGHUP")
  async.sleep(0.05)
  print("still ignored")
end)
]], helper.ROOT .. "/lua/?.lua;" .. helper.ROOT .. "/lua/?/init.lua;", helper.BUILD .. "/lib/?.so;"))
    local preload = os.getenv("LD_PRELOAD")
    local env = preload and ("env LD_PRELOAD=" .. q(preload) .. " ") or ""
    -- no `timeout` wrapper here: it would reset the ignored signal to its default
    local r = helper.sh("trap '' HUP; exec " .. env .. "lua5.4 " .. q(path))
    assert.equal(0, r.code, r.stderr)
    assert.equal("ignored\nstill ignored\n", r.stdout)
  end)

  helper.it("watcher metamethods called with something else raise instead of crashing", function()
    local mt = debug.getregistry()["lasync.signal"]
    for _, name in ipairs({ "__tostring", "__close", "__gc" }) do
      helper.expect_plain_error({ "lasync.signal expected" }, mt[name], {})
      helper.expect_plain_error({ "lasync.signal expected" }, mt[name], io.stdout)
    end
  end)

  describe("in the interpreter", function()
    it("a script that only waits for a signal waits (no deadlock) and gets it", function()
      local path = helper.script([[
local async = require("lasync")
print("READY")
io.stdout:flush()
print("got", async.signal.wait("SIGTERM"))
]])
      local r = helper.signal_run(q(helper.LASYNC) .. " " .. q(path), "TERM")
      assert.equal(0, r.code, r.stderr)
      assert.equal("READY\ngot\tSIGTERM\n", r.stdout)
    end)

    it("a script waiting for SIGINT gets Ctrl-C instead of being interrupted", function()
      local path = helper.script([[
local async = require("lasync")
local h = async.signal.on("SIGINT", function() print("handler ran") end)
print("READY")
io.stdout:flush()
async.signal.wait("SIGINT")
async.sleep(0.05)
h:close()
print("done")
]])
      local r = helper.signal_run(q(helper.LASYNC) .. " " .. q(path), "INT")
      assert.equal(0, r.code, r.stderr)
      assert.equal("READY\nhandler ran\ndone\n", r.stdout)
    end)

    it("after the script's SIGINT watchers close, Ctrl-C cancels the main task again", function()
      local path = helper.script([[
local async = require("lasync")
async.signal.on("SIGINT", function() end):close()
local w = async.spawn(async.signal.wait, "SIGINT")
async.sleep(0.01)
w:cancel()
pcall(w.await, w)
local _ <close> = setmetatable({}, { __close = function() print("main cleanup") end })
print("READY")
io.stdout:flush()
async.sleep(60)
print("not reached")
]])
      local r = helper.signal_run(q(helper.LASYNC) .. " " .. q(path), "INT")
      assert.equal(130, r.code, r.stderr)
      assert.equal("READY\nmain cleanup\n", r.stdout)
      assert.is_truthy(r.stderr:find("interrupted", 1, true), r.stderr)
    end)
  end)

  after_each(helper.cleanup)
end)
