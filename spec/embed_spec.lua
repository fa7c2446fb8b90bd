-- The embedding seam: a C host (examples/embed/host.c) that owns its libuv loop, drives lasync
-- with lasync_step, and suspends tasks in its own C function (lasync_op) until its own timer fires.
local helper = require("spec.helper")

describe("a C host embedding lasync", function()
  local host = helper.ROOT .. "/build/embed-host"

  it("runs a script on the host's loop, with host-side async calls, cancellation and timeouts", function()
    local r = helper.sh("cd " .. helper.q(helper.ROOT) .. " && " .. helper.q(host))
    assert.equal(0, r.code, r.stderr)
    assert.equal(table.concat({
      "gathered\t2\t4",
      "slow cancelled\tfalse\tcancelled: task 'task-4' was cancelled",
      "timeout\tfalse\ttimeout: timed out after 0.02 s",
      "elapsed < 0.5 s: true",
    }, "\n") .. "\n", r.stdout)
  end)

  it("cancels a host operation cleanly, also when the task was cancelled before it started", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
local async = require('lasync')
local host = require('host')
local early = async.spawn(function()
  async.current_task():cancel('early')  -- sticky: host.delay must not even start
  return pcall(host.delay, 10, 1)
end)
print(early:await())
local t = async.spawn(host.delay, 10000, 2)
async.sleep(0.01)
t:cancel('late')
print(pcall(t.await, t))
]])
    f:close()
    local r = helper.sh("cd " .. helper.q(helper.ROOT) .. " && " .. helper.q(host) .. " "
                        .. helper.q(script))
    os.remove(script)
    assert.equal(0, r.code, r.stderr)
    assert.equal("false\tcancelled: task 'task-2' was cancelled: early\n"
                 .. "false\tcancelled: task 'task-3' was cancelled: late\n", r.stdout)
  end)

  -- close-early-host (spec/support/close_early_host.c) closes its Lua state while the task
  -- still waits for a request, or after the request completed but before the task resumed; its
  -- own loop then runs on: the request's callback must not touch the closed state (ASan, under
  -- make check-asan), nothing may leak (LeakSanitizer), no handle may be left open.
  it("closing the Lua state while requests are in flight frees them; the host's loop closes", function()
    local early = helper.BUILD .. "/close-early-host"
    local scripts = {
      "return require('lasync.fs').stat('/')",
      "return require('lasync.fs').read_file('/etc/hostname')",
      "return require('lasync.dns').resolve('localhost')",
      "return require('lasync').to_thread(function(n) return n + 1 end, 41)",
      [[local async = require('lasync')
        local srv = async.tcp.serve('127.0.0.1', 0, function(s) s:read_all() end)
        return async.tcp.connect('127.0.0.1', srv.port)]],
    }
    for _, script in ipairs(scripts) do
      for _, steps in ipairs({ 0, 1, 2 }) do
        local r = helper.sh("cd " .. helper.q(helper.ROOT) .. " && timeout 20 " .. helper.q(early)
                            .. " " .. helper.q(script) .. " " .. steps)  -- (a handle left open
                                                                          -- would hang the loop)
        assert.equal(0, r.code, script .. " / " .. steps .. ": " .. r.stdout .. r.stderr)
        assert.equal("loop closed: 0\n", r.stdout, script)
      end
    end
  end)

  it("reports a failing script with its traceback and a non-zero exit", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write("local async = require('lasync')\nasync.sleep(0.001)\nerror('host script failed')\n")
    f:close()
    local r = helper.sh("cd " .. helper.q(helper.ROOT) .. " && " .. helper.q(host) .. " "
                        .. helper.q(script))
    os.remove(script)
    assert.equal(1, r.code)
    assert.is_truthy(r.stderr:find("host script failed", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("stack traceback", 1, true), r.stderr)
  end)
end)
