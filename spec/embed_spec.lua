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
