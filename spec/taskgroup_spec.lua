-- async.TaskGroup: structured concurrency with <close>.
local helper = require("spec.helper")
local async = helper.async

-- a child that sleeps 30 s; its cleanup awaits (shielded) 20 ms, then logs
local function slow(log, label)
  return function()
    local _ <close> = setmetatable({}, { __close = function(_, e)
      async.shielded(async.sleep, 0.02)
      log[#log + 1] = label .. (async.is_cancelled(e) and " cancelled" or " closed")
    end })
    async.sleep(30)
    log[#log + 1] = label .. " finished"
  end
end

describe("async.TaskGroup", function()
  helper.it("leaving the block waits for every child; spawn returns the Task and passes arguments", function()
    local log = {}
    local t1, t2, t3
    do
      local g <close> = async.TaskGroup()
      t1 = g:spawn(function(a, b) async.sleep(0.03) log[#log + 1] = "t1" return a + b end, 1, 2)
      t2 = g:spawn(function() async.sleep(0.01) log[#log + 1] = "t2" return "two" end)
      t3 = g:spawn(function() log[#log + 1] = "t3" end)
      assert.same({}, log) -- children are scheduled, not run eagerly
    end
    assert.same({ "t3", "t2", "t1" }, log)
    for _, t in ipairs({ t1, t2, t3 }) do assert.is_true(t:done()) end
    assert.equal(3, t1:result())
    assert.equal("two", t2:result())
  end)

  helper.it("g:wait() waits for the children", function()
    local g <close> = async.TaskGroup()
    local a = g:spawn(function() async.sleep(0.02) return "a" end)
    local b = g:spawn(function() async.sleep(0.01) return "b" end)
    g:wait()
    assert.is_true(a:done())
    assert.is_true(b:done())
    assert.equal("a", a:result())
  end)

  helper.it("children may spawn more children into the group", function()
    local log = {}
    do
      local g <close> = async.TaskGroup()
      g:spawn(function()
        async.sleep(0.01)
        g:spawn(function() async.sleep(0.02) log[#log + 1] = "grandchild" end)
      end)
    end
    assert.same({ "grandchild" }, log)
  end)

  helper.it("a failing child cancels the others and the block, then raises the child's own error", function()
    local e = { "child failed" }
    local log = {}
    local block_saw
    local ok, err = pcall(function()
      local g <close> = async.TaskGroup()
      g:spawn(slow(log, "sibling1"))
      g:spawn(function() async.sleep(0.01) error(e) end)
      g:spawn(slow(log, "sibling2"))
      local ok2, e2 = pcall(async.sleep, 30)
      block_saw = { ok2, async.is_cancelled(e2) }
      error(e2, 0)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.same({ false, true }, block_saw)
    table.sort(log)
    assert.same({ "sibling1 cancelled", "sibling2 cancelled" }, log)
  end)

  helper.it("a child failure while the block is already leaving is raised too", function()
    local e = { "late failure" }
    local log = {}
    local ok, err = pcall(function()
      local g <close> = async.TaskGroup()
      g:spawn(slow(log, "sibling"))
      g:spawn(function() async.sleep(0.02) error(e) end)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.same({ "sibling cancelled" }, log)
  end)

  helper.it("several failures are raised as one error with .errors", function()
    local e1, e2 = { "first" }, { "second" }
    local ok, err = pcall(function()
      local g <close> = async.TaskGroup()
      g:spawn(function() async.sleep(0.01) error(e1) end)
      g:spawn(function()
        pcall(async.sleep, 30) -- cancelled because of e1, then fails on its own
        error(e2)
      end)
    end)
    assert.is_false(ok)
    assert.equal("table", type(err))
    assert.is_table(err.errors)
    assert.equal(2, #err.errors)
    assert.is_true(helper.contains(err.errors, e1))
    assert.is_true(helper.contains(err.errors, e2))
    assert.is_falsy(tostring(err):match("^table: "), "not a readable tostring")
  end)

  helper.it("an error in the block cancels and awaits the children, then is raised unchanged", function()
    local e = { "block failed" }
    local log = {}
    local ok, err = pcall(function()
      local g <close> = async.TaskGroup()
      g:spawn(slow(log, "c1"))
      g:spawn(slow(log, "c2"))
      async.sleep(0.01)
      error(e)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    table.sort(log)
    assert.same({ "c1 cancelled", "c2 cancelled" }, log)
  end)

  helper.it("a Cancelled raised by the block itself (not its cancellation) cancels the children", function()
    local log = {}
    local victim = async.spawn(function() async.sleep(30) end)
    async.yield()
    victim:cancel("someone else's task")
    local ok, err = pcall(async.timeout, 3, function()
      local g <close> = async.TaskGroup()
      g:spawn(slow(log, "c1"))
      async.sleep(0.005)
      victim:await() -- raises Cancelled: the victim was cancelled, not this task
    end)
    assert.is_false(ok)
    assert.is_false(async.is_timeout(err), "the group waited for its children without cancelling them")
    assert.is_true(async.is_cancelled(err))
    assert.is_truthy(err.message:find("someone else's task", 1, true))
    assert.same({ "c1 cancelled" }, log)
    assert.is_false(async.current_task():cancelled())
  end)

  helper.it("a block error is listed first when children failed too", function()
    local eb, ec = { "block" }, { "child" }
    local ok, err = pcall(function()
      local g <close> = async.TaskGroup()
      g:spawn(function()
        pcall(async.sleep, 30)
        error(ec) -- fails while being cancelled
      end)
      async.sleep(0.01)
      error(eb)
    end)
    assert.is_false(ok)
    assert.is_table(err.errors)
    assert.equal(2, #err.errors)
    assert.is_true(rawequal(eb, err.errors[1]))
    assert.is_true(rawequal(ec, err.errors[2]))
  end)

  helper.it("a child cancelled by someone else is not a failure", function()
    local victim, other
    do
      local g <close> = async.TaskGroup()
      victim = g:spawn(function() async.sleep(30) end)
      other = g:spawn(function() async.sleep(0.03) return "other ok" end)
      async.sleep(0.005)
      victim:cancel()
      async.sleep(0.005)
    end
    assert.is_true(victim:cancelled())
    assert.is_false(other:cancelled())
    assert.equal("other ok", other:result())
  end)

  helper.it("when the owner is cancelled, leaving the block cancels and waits for the children", function()
    local log = {}
    local after_block = false
    local owner = async.spawn(function()
      do
        local g <close> = async.TaskGroup()
        g:spawn(slow(log, "c1"))
        g:spawn(slow(log, "c2"))
        async.sleep(30)
      end
      after_block = true
    end)
    async.sleep(0.01)
    owner:cancel("owner stop")
    local ok, err = pcall(owner.await, owner)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_truthy(err.message:find("owner stop", 1, true))
    assert.is_true(owner:cancelled())
    assert.is_false(after_block)
    table.sort(log)
    assert.same({ "c1 cancelled", "c2 cancelled" }, log)
  end)

  helper.it("the owner cancelled while the block is leaving still waits for the children", function()
    local log = {}
    local owner = async.spawn(function()
      local g <close> = async.TaskGroup()
      g:spawn(slow(log, "c"))
    end)
    async.sleep(0.01) -- the owner is now waiting in the group's __close
    owner:cancel()
    local ok, err = pcall(owner.await, owner)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.same({ "c cancelled" }, log)
  end)

  helper.it("a deadline expiring around the group cancels the children and raises the timeout", function()
    local log = {}
    local ok, err = pcall(async.timeout, 0.02, function()
      local g <close> = async.TaskGroup()
      g:spawn(slow(log, "c1"))
      g:spawn(slow(log, "c2"))
    end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err), tostring(err))
    table.sort(log)
    assert.same({ "c1 cancelled", "c2 cancelled" }, log)
  end)

  helper.it("a failure in a nested group propagates through the outer group unchanged", function()
    local e = { "deep" }
    local log = {}
    local ok, err = pcall(function()
      local outer <close> = async.TaskGroup()
      outer:spawn(slow(log, "outer child"))
      outer:spawn(function()
        local inner <close> = async.TaskGroup()
        inner:spawn(slow(log, "inner child"))
        inner:spawn(function() async.sleep(0.01) error(e) end)
      end)
      async.sleep(30)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    table.sort(log)
    assert.same({ "inner child cancelled", "outer child cancelled" }, log)
  end)

  helper.it("after the group raised, the task awaits normally", function()
    local ok = pcall(function()
      local g <close> = async.TaskGroup()
      g:spawn(function() error("x", 0) end)
      async.sleep(30)
    end)
    assert.is_false(ok)
    assert.equal("fine", async.sleep(0.01, "fine"))
    do
      local g <close> = async.TaskGroup()
      g:spawn(async.sleep, 0.01)
    end
  end)
end)
