-- Cancellation: delivery at every kind of suspension, cleanup, stickiness, ownership, shielding.
local helper = require("spec.helper")
local async = helper.async

-- Spawns `body` wrapped so that the first Cancelled it sees is caught and reported: the task
-- returns "caught", the error, and what the cleanup log looked like.
local function catching(body)
  local log = {}
  local t = async.spawn(function()
    local ok, err = pcall(function()
      local _ <close> = helper.closer(log, "closed")
      body(log)
      log[#log + 1] = "not reached"
    end)
    assert(not ok, "the suspension returned normally")
    return "caught", err, log
  end)
  return t, log
end

local function check_caught(t, msg)
  local tag, err, log = t:await()
  assert.equal("caught", tag)
  assert.is_true(async.is_cancelled(err), tostring(err))
  assert.equal("cancelled", err.kind)
  if msg then
    assert.is_truthy(err.message:find(msg, 1, true), err.message)
  end
  assert.same({ "closed" }, log)
  assert.is_false(t:cancelled()) -- it caught the Cancelled and returned normally
  assert.is_true(t:done())
end

describe("cancellation is delivered at the suspension point", function()
  helper.it("in sleep", function()
    local t0 = async.now()
    local t = catching(function() async.sleep(30) end)
    async.yield()
    assert.is_true(t:cancel("stop sleeping"))
    check_caught(t, "stop sleeping")
    assert.is_true(async.now() - t0 < 5)
  end)

  helper.it("in await of a task (which keeps running: awaiting never owns)", function()
    local f = async.Future()
    local other = async.spawn(function() return f:await() end)
    local t = catching(function() other:await() end)
    async.yield()
    assert.is_true(t:cancel("stop awaiting"))
    check_caught(t, "stop awaiting")
    assert.is_false(other:done())
    assert.is_false(other:cancelled())
    f:set_result("still fine")
    assert.equal("still fine", other:await())
  end)

  helper.it("in await of a future (which stays pending: awaiting never owns)", function()
    local f = async.Future()
    local t = catching(function() f:await() end)
    local t2 = catching(function() async.await(f) end)
    local bystander = async.spawn(function() return f:await() end)
    async.yield()
    t:cancel("m1")
    t2:cancel("m2")
    check_caught(t, "m1")
    check_caught(t2, "m2")
    assert.is_false(f:done())
    f:set_result(7)
    assert.equal(7, bystander:await())
  end)

  helper.it("in gather (whose children are cancelled and finish first)", function()
    local clog = {}
    local c1 = async.spawn(function()
      local _ <close> = setmetatable({}, { __close = function()
        async.shielded(async.sleep, 0.02)
        clog[#clog + 1] = "c1 cleaned"
      end })
      async.sleep(30)
    end)
    local children_done_at_catch
    local t = catching(function()
      local ok, err = pcall(async.gather, c1, function() async.sleep(30) end)
      children_done_at_catch = not ok and c1:done() and #clog == 1
      error(err, 0)
    end)
    async.sleep(0.01)
    t:cancel("stop gathering")
    check_caught(t, "stop gathering")
    assert.is_true(children_done_at_catch)
    assert.is_true(c1:cancelled())
  end)

  helper.it("in wait (whose tasks are not cancelled)", function()
    local f = async.Future()
    local other = async.spawn(function() return f:await() end)
    local t = catching(function() async.wait({ other, f }) end)
    async.yield()
    t:cancel("stop waiting")
    check_caught(t, "stop waiting")
    assert.is_false(other:done())
    assert.is_false(f:done())
    f:set_result(1)
    assert.equal(1, other:await())
  end)

  helper.it("in yield", function()
    local t = catching(function() while true do async.yield() end end)
    async.yield()
    async.yield()
    t:cancel("stop yielding")
    check_caught(t, "stop yielding")
  end)

  helper.it("in sleep(0)", function()
    local t = catching(function() while true do async.sleep(0) end end)
    async.yield()
    t:cancel("stop spinning")
    check_caught(t, "stop spinning")
  end)

  helper.it("before the task started: it ends cancelled", function()
    local ran = false
    local t = async.spawn(function() ran = true; async.sleep(30) end)
    assert.is_true(t:cancel())
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_true(t:cancelled())
    assert.is_true(t:done())
    local _ = ran -- whether the body started is not specified
  end)
end)

describe("a cancelled task", function()
  helper.it("runs pcall handlers and <close> cleanup, innermost first", function()
    local log = {}
    local t = async.spawn(function()
      local _ <close> = helper.closer(log, "outer close")
      local ok, err = pcall(function()
        local _ <close> = helper.closer(log, "inner close")
        async.sleep(30)
      end)
      log[#log + 1] = "pcall returned " .. tostring(ok) .. " " .. tostring(async.is_cancelled(err))
      error(err, 0) -- let the Cancelled continue
    end)
    async.yield()
    t:cancel()
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_true(t:cancelled())
    assert.same({ "inner close", "pcall returned false true", "outer close" }, log)
  end)

  helper.it("is cancelled stickily: every later await raises Cancelled until it finishes", function()
    local f = async.Future()
    local kinds = {}
    local t = async.spawn(function()
      local function try(fn, ...)
        local ok, err = pcall(fn, ...)
        kinds[#kinds + 1] = ok and "ok" or (async.is_cancelled(err) and "cancelled" or tostring(err))
      end
      try(async.sleep, 30)
      try(async.sleep, 0.001)
      try(async.sleep, 0)
      try(async.yield)
      try(f.await, f)
      try(async.gather, function() return 1 end)
      local x = 0
      for i = 1, 10 do x = x + i end -- plain code still runs
      return "swallowed", x
    end)
    async.yield()
    t:cancel()
    assert.same({ n = 2, "swallowed", 55 }, table.pack(t:await()))
    assert.same({ "cancelled", "cancelled", "cancelled", "cancelled", "cancelled", "cancelled" }, kinds)
    assert.is_false(t:cancelled())
    assert.is_nil(t:error())
    assert.is_false(f:done())
  end)

  helper.it("that catches Cancelled and returns finishes normally with its results", function()
    local t = async.spawn(function()
      local ok = pcall(async.sleep, 30)
      return "recovered", ok
    end)
    async.yield()
    assert.is_true(t:cancel())
    assert.same({ n = 2, "recovered", false }, table.pack(t:await()))
    assert.is_false(t:cancelled())
    assert.same({ n = 2, "recovered", false }, table.pack(t:result()))
  end)

  helper.it("gives Cancelled to every task awaiting it", function()
    local t = async.spawn(function() async.sleep(30) end)
    local awaiters = {}
    for i = 1, 3 do
      awaiters[i] = async.spawn(function()
        local ok, err = pcall(t.await, t)
        return ok, async.is_cancelled(err)
      end)
    end
    async.yield()
    t:cancel("bye")
    for i = 1, 3 do
      assert.same({ n = 2, false, true }, table.pack(awaiters[i]:await()))
    end
    local ok, err = pcall(async.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_truthy(err.message:find("bye", 1, true))
  end)

  helper.it("cancel returns true while pending and false once done", function()
    local t = async.spawn(function() async.sleep(30) end)
    async.yield()
    assert.is_true(t:cancel())
    pcall(t.await, t)
    assert.is_false(t:cancel())
    local u = async.spawn(function() return 1 end)
    u:await()
    assert.is_false(u:cancel())
    assert.is_false(u:cancelled())
    assert.equal(1, u:result())
  end)

  helper.it("a cancel arriving after the awaited future settled, before the task resumed, wins", function()
    local f = async.Future()
    local after_await = false
    local t = async.spawn(function()
      f:await()
      after_await = true
      return "finished"
    end)
    async.yield()
    f:set_result("value") -- t is woken but has not run yet
    assert.is_true(t:cancel("late"))
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_true(t:cancelled())
    assert.is_false(after_await)
  end)

  helper.it("a cancel that returned true is never lost, even if the timer already fired", function()
    for _ = 1, 20 do
      local t = async.spawn(function()
        async.sleep(0.001)
        return "finished"
      end)
      async.yield()
      local c = os.clock()
      while os.clock() - c < 0.003 do end -- the timer expires meanwhile
      async.yield()
      if t:cancel() then
        local ok, err = pcall(t.await, t)
        assert.is_false(ok, "cancel() returned true but the task finished normally")
        assert.is_true(async.is_cancelled(err))
        assert.is_true(t:cancelled())
      else
        assert.equal("finished", t:await())
      end
    end
  end)

  helper.it("a task can cancel itself: its next await raises Cancelled", function()
    local t = async.spawn(function()
      assert(async.current_task():cancel("self"))
      local x = "plain code still runs"
      async.sleep(0)
      return x
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_truthy(err.message:find("self", 1, true))
    assert.is_true(t:cancelled())
  end)

  helper.it("cancellation without a message still gives a Cancelled error with a message", function()
    local t = async.spawn(function() async.sleep(30) end)
    async.yield()
    t:cancel()
    local _, err = pcall(t.await, t)
    assert.is_true(async.is_cancelled(err))
    assert.is_string(err.message)
  end)

  helper.it("cancelling the top of a tree of gathers cancels and cleans up every level", function()
    local log = {}
    local function leaf(label)
      return function()
        local _ <close> = setmetatable({}, { __close = function()
          async.shielded(async.sleep, 0.01)
          log[#log + 1] = label
        end })
        async.sleep(30)
      end
    end
    local top = async.spawn(function()
      async.gather(
        function() async.gather(leaf("a1"), leaf("a2")) end,
        function()
          async.gather(function() async.gather(leaf("b1")) end, leaf("b2"))
        end)
    end)
    async.sleep(0.01)
    top:cancel()
    local ok, err = pcall(top.await, top)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    table.sort(log)
    assert.same({ "a1", "a2", "b1", "b2" }, log)
  end)

  helper.it("awaiting a task that was cancelled does not cancel the awaiter", function()
    local t = async.spawn(function() async.sleep(30) end)
    async.yield()
    t:cancel()
    local ok = pcall(t.await, t)
    assert.is_false(ok)
    -- the main task is not cancelled: it can keep awaiting
    async.sleep(0.001)
    assert.equal(5, async.spawn(function() return 5 end):await())
  end)
end)

describe("async.shielded", function()
  helper.it("returns fn's results and passes arguments", function()
    assert.same({ n = 3, 3, nil, "z" },
      table.pack(async.shielded(function(a, b, c) async.sleep(0) return a + 2, b, c end, 1, nil, "z")))
  end)

  helper.it("holds a cancellation back until fn returns, then delivers it at the next await", function()
    local f = async.Future()
    local log = {}
    local t = async.spawn(function()
      local a, b = async.shielded(function()
        log[#log + 1] = "shield start"
        local v = f:await()
        async.sleep(0.001)
        log[#log + 1] = "shield got " .. v
        return v, "second"
      end)
      log[#log + 1] = "after shield " .. a .. " " .. b
      local ok, err = pcall(async.sleep, 0.001)
      log[#log + 1] = ok and "no cancel" or (async.is_cancelled(err) and "cancelled" or "other")
      return "finished"
    end)
    async.yield()
    assert.is_true(t:cancel("delayed"))
    async.sleep(0.02)
    assert.is_false(t:done())
    f:set_result("v")
    assert.equal("finished", t:await())
    assert.same({ "shield start", "shield got v", "after shield v second", "cancelled" }, log)
  end)

  helper.it("a held-back cancellation that is not caught ends the task cancelled", function()
    local reached = false
    local t = async.spawn(function()
      async.shielded(async.sleep, 0.03)
      async.sleep(0)
      reached = true
    end)
    async.yield()
    t:cancel()
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_true(t:cancelled())
    assert.is_false(reached)
  end)

  helper.it("still applies deadlines set inside fn", function()
    local t0 = async.now()
    local ok, err = async.shielded(function()
      return pcall(async.timeout, 0.02, async.sleep, 30)
    end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_true(async.now() - t0 < 5)
  end)

  helper.it("lets a task cancel itself from inside fn, delivered after fn returns", function()
    local log = {}
    local t = async.spawn(function()
      async.shielded(function()
        async.current_task():cancel("from inside")
        async.sleep(0.005)
        log[#log + 1] = "shielded sleep completed"
      end)
      async.sleep(0)
      log[#log + 1] = "not reached"
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.same({ "shielded sleep completed" }, log)
  end)

  helper.it("holds a deadline back too", function()
    local inner_ok
    local t0 = async.now()
    local ok, err = pcall(async.timeout, 0.02, function()
      inner_ok = pcall(async.shielded, async.sleep, 0.1)
      async.sleep(0.001) -- the deadline is delivered here
      return "unreachable"
    end)
    assert.is_true(inner_ok)
    assert.is_true(async.now() - t0 >= 0.09)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
  end)
end)
