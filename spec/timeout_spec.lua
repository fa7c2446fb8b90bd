-- async.timeout and async.deadline: scoped deadlines, nesting, and what comes out of which scope.
local helper = require("spec.helper")
local async = helper.async

describe("async.timeout", function()
  helper.it("returns fn's results (with its arguments) when it finishes in time", function()
    local r = table.pack(async.timeout(1, function(a, b)
      async.sleep(0.01)
      return b, a, nil
    end, "x", "y"))
    assert.same({ n = 3, "y", "x", nil }, r)
  end)

  helper.it("on expiry cancels the pending operation and raises a timeout error", function()
    local seen
    local t0 = async.now()
    local ok, err = pcall(async.timeout, 0.03, function()
      local ok2, e2 = pcall(async.sleep, 30)
      seen = { ok2, async.is_cancelled(e2), async.is_timeout(e2) }
      error(e2, 0)
    end)
    local dt = async.now() - t0
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.equal("timeout", err.kind)
    assert.is_false(async.is_cancelled(err))
    -- inside the scope the operation saw Cancelled
    assert.same({ false, true, false }, seen)
    assert.is_true(dt >= 0.025, "expired after " .. dt)
    assert.is_true(dt < 2, "expired after " .. dt)
  end)

  helper.it("cancels any kind of operation: future, task await, yield loop", function()
    local f = async.Future()
    local ok, err = pcall(async.timeout, 0.01, f.await, f)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_false(f:done()) -- the future was only observed

    local t = async.spawn(function() async.sleep(30) end)
    ok, err = pcall(async.timeout, 0.01, t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_false(t:done()) -- the task was only observed
    t:cancel()
    pcall(t.await, t)

    ok, err = pcall(async.timeout, 0.01, function() while true do async.yield() end end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
  end)

  helper.it("runs cleanup inside the scope", function()
    local log = {}
    local ok = pcall(async.timeout, 0.01, function()
      local _ <close> = helper.closer(log, "closed")
      async.sleep(30)
    end)
    assert.is_false(ok)
    assert.same({ "closed" }, log)
  end)

  helper.it("after the timeout the task awaits normally", function()
    local ok, err = pcall(async.timeout, 0.01, async.sleep, 30)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    local t0 = async.now()
    assert.equal("awake", async.sleep(0.03, "awake"))
    assert.is_true(async.now() - t0 >= 0.025)
    assert.equal(3, async.spawn(function() return 3 end):await())
    assert.equal("again", async.timeout(1, function() async.sleep(0.01) return "again" end))
  end)

  helper.it("a scope that finished in time does not affect later awaits", function()
    assert.equal("fast", async.timeout(0.05, function() return "fast" end))
    async.sleep(0.1) -- past the old deadline
    assert.equal("late", async.sleep(0.001, "late"))
  end)

  helper.it("passes fn's own errors through unchanged", function()
    local e = {}
    local ok, err = pcall(async.timeout, 1, function() async.sleep(0) error(e) end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
  end)

  helper.it("a task cancelled inside a timeout scope ends cancelled, not timed out", function()
    local t = async.spawn(function() return async.timeout(30, async.sleep, 30) end)
    async.yield()
    t:cancel("outside")
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_false(async.is_timeout(err))
    assert.is_true(t:cancelled())
  end)
end)

describe("nested deadlines", function()
  helper.it("the inner, earlier deadline expires and its own scope raises the timeout", function()
    local outer_saw
    local t0 = async.now()
    local ok, err = pcall(async.timeout, 5, function()
      local ok2, e2 = pcall(async.timeout, 0.02, async.sleep, 30)
      outer_saw = { ok2, async.is_timeout(e2) }
      async.sleep(0.01) -- the outer scope is intact
      return "outer fine"
    end)
    assert.is_true(ok, tostring(err))
    assert.equal("outer fine", err)
    assert.same({ false, true }, outer_saw)
    assert.is_true(async.now() - t0 < 2)
  end)

  helper.it("the outer, earlier deadline wins: inner scopes see Cancelled, the outer times out", function()
    local inner_err
    local t0 = async.now()
    local ok, err = pcall(async.timeout, 0.03, function()
      local ok2, e2 = pcall(async.timeout, 10, function()
        local ok3, e3 = pcall(async.timeout, 20, async.sleep, 30)
        assert(not ok3)
        error(e3, 0)
      end)
      assert(not ok2)
      inner_err = e2
      error(e2, 0)
    end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_true(async.is_cancelled(inner_err))
    assert.is_false(async.is_timeout(inner_err))
    assert.is_true(async.now() - t0 < 2) -- a later inner deadline never extends the outer one
  end)

  helper.it("inside an expired outer scope every await keeps raising Cancelled until it exits", function()
    local kinds = {}
    local ok, err = pcall(async.timeout, 0.02, function()
      for _ = 1, 3 do
        local ok2, e2 = pcall(async.sleep, 30)
        kinds[#kinds + 1] = (not ok2) and async.is_cancelled(e2)
      end
      error("done trying", 0)
    end)
    assert.is_false(ok)
    assert.same({ true, true, true }, kinds)
    -- fn raised its own error, which passes through
    assert.is_true(err == "done trying" or async.is_timeout(err))
    async.sleep(0.001) -- and the task is fine afterwards
  end)
end)

describe("async.deadline with <close>", function()
  helper.it("applies a deadline to the rest of the block and raises a timeout error", function()
    local log = {}
    local t0 = async.now()
    local ok, err = pcall(function()
      local d <close> = async.deadline(0.03)
      local _ <close> = helper.closer(log, "inner resource")
      local _ = d
      async.sleep(30)
      log[#log + 1] = "not reached"
    end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err), tostring(err))
    assert.same({ "inner resource" }, log)
    assert.is_true(async.now() - t0 >= 0.025)
    -- after the block the task awaits normally
    assert.equal("ok", async.sleep(0.05, "ok"))
  end)

  helper.it("returns normally when the block finishes in time", function()
    do
      local d <close> = async.deadline(0.05)
      local _ = d
      async.sleep(0.001)
    end
    async.sleep(0.1) -- past the deadline, outside the block
  end)

  helper.it("nests with async.timeout: the earliest wins, the others see Cancelled", function()
    local inner
    local ok, err = pcall(function()
      local d <close> = async.deadline(0.02)
      local _ = d
      local ok2, e2 = pcall(async.timeout, 10, async.sleep, 30)
      inner = e2
      assert(not ok2)
      error(e2, 0)
    end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_true(async.is_cancelled(inner))

    local ok3, e3 = pcall(async.timeout, 0.02, function()
      local d <close> = async.deadline(10)
      local _ = d
      async.sleep(30)
    end)
    assert.is_false(ok3)
    assert.is_true(async.is_timeout(e3))
  end)

  helper.it("works inside a spawned task and ends the task with the timeout error", function()
    local t = async.spawn(function()
      local d <close> = async.deadline(0.01)
      local _ = d
      async.sleep(30)
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_false(t:cancelled())
  end)
end)
