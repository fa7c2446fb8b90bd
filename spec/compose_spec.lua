-- Composition: gather, wait, race, as_completed, wait_for, shield.
local helper = require("spec.helper")
local async = helper.async

-- a task that sleeps `d` then returns `v` (or raises it when `fail`)
local function after(d, v, fail)
  return async.spawn(function()
    async.sleep(d)
    if fail then error(v, 0) end
    return v
  end)
end

-- a function child that sleeps 30 s; its <close> does an awaiting cleanup (shielded) and logs
local function slow_child(log, label)
  return function()
    local _ <close> = setmetatable({}, { __close = function(_, e)
      async.shielded(async.sleep, 0.02)
      log[#log + 1] = label .. (async.is_cancelled(e) and " cancelled" or " closed")
    end })
    async.sleep(30)
    return "slow done"
  end
end

local function set_of(list)
  local s = {}
  for _, x in ipairs(list) do s[x] = true end
  return s
end

describe("async.gather", function()
  helper.it("returns the first result of each argument, in argument order", function()
    local f = async.Future()
    async.spawn(function() async.sleep(0.01) f:set_result("F", "ignored") end)
    local r = table.pack(async.gather(
      function() async.sleep(0.03) return "fn", "extra" end,
      after(0.02, "task"),
      f,
      function() return nil end,
      function() return 5 end))
    assert.same({ n = 5, "fn", "task", "F", nil, 5 }, r)
  end)

  helper.it("spawns function arguments as concurrent tasks", function()
    local f = async.Future()
    -- deadlocks unless both functions run concurrently
    local a, b = async.gather(
      function() return f:await() end,
      function() async.sleep(0.005) f:set_result("from b") return "b" end)
    assert.equal("from b", a)
    assert.equal("b", b)
  end)

  helper.it("with one list returns a table of results with n", function()
    local r = async.gather({ after(0.02, 1), function() return nil end, after(0.01, 3) })
    assert.same({ n = 3, 1, nil, 3 }, r)
  end)

  helper.it("gather() returns nothing and gather({}) returns {n = 0}", function()
    assert.equal(0, select("#", async.gather()))
    assert.same({ n = 0 }, async.gather({}))
  end)

  helper.it("on the first error cancels the others, waits for them, then raises that error", function()
    local e = { "child error" }
    local log = {}
    local sibling = async.spawn(slow_child(log, "sibling task"))
    local t0 = async.now()
    local ok, err = pcall(async.gather,
      slow_child(log, "fn child"),
      function() async.sleep(0.01) error(e) end,
      sibling)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    table.sort(log)
    -- both cleanups (which await 20 ms) finished before gather raised
    assert.same({ "fn child cancelled", "sibling task cancelled" }, log)
    assert.is_true(sibling:cancelled())
    assert.is_true(async.now() - t0 < 5)
  end)

  helper.it("raises the error of the first failure in time, not in argument order", function()
    local ok, err = pcall(async.gather,
      function() async.sleep(0.05) error("late", 0) end,
      function() async.sleep(0.005) error("early", 0) end)
    assert.is_false(ok)
    assert.equal("early", err)
  end)

  helper.it("treats a child that ended cancelled as a failure", function()
    local log = {}
    local victim = async.spawn(function() async.sleep(30) end)
    async.spawn(function() async.sleep(0.01) victim:cancel("by someone else") end)
    local ok, err = pcall(async.gather, victim, slow_child(log, "other"))
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.same({ "other cancelled" }, log)
    -- the caller itself was not cancelled
    assert.equal(1, async.spawn(function() return 1 end):await())
  end)

  helper.it("with return_errors puts error values in their slots and cancels nothing", function()
    local e = { "boom" }
    local victim = async.spawn(function() async.sleep(30) end)
    async.spawn(function() async.sleep(0.005) victim:cancel() end)
    local r = async.gather({
      function() async.sleep(0.01) error(e) end,
      after(0.03, "fine"),
      function() error("exact", 0) end,
      victim,
    }, { return_errors = true })
    assert.equal(4, r.n)
    assert.is_true(rawequal(e, r[1]))
    assert.equal("fine", r[2])
    assert.equal("exact", r[3])
    assert.is_true(async.is_cancelled(r[4]))
  end)

  helper.it("cancels its children when the calling task is cancelled, and waits for them", function()
    local log = {}
    local child_task = async.spawn(slow_child(log, "task arg"))
    local state_at_catch
    local caller = async.spawn(function()
      local ok, err = pcall(async.gather, child_task, slow_child(log, "fn arg"))
      state_at_catch = { ok, async.is_cancelled(err), #log, child_task:done() }
      error(err, 0)
    end)
    async.sleep(0.01)
    caller:cancel()
    local ok, err = pcall(caller.await, caller)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.same({ false, true, 2, true }, state_at_catch)
    assert.is_true(child_task:cancelled())
  end)
end)

describe("combinators under a deadline", function()
  helper.it("gather inside an expiring timeout cancels and awaits its children, then times out", function()
    local log = {}
    local ok, err = pcall(async.timeout, 0.02, async.gather, slow_child(log, "a"), slow_child(log, "b"))
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    table.sort(log)
    assert.same({ "a cancelled", "b cancelled" }, log)
  end)

  helper.it("race inside an expiring timeout cancels and awaits its children, then times out", function()
    local log = {}
    local ok, err = pcall(async.timeout, 0.02, async.race, slow_child(log, "a"), slow_child(log, "b"))
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    table.sort(log)
    assert.same({ "a cancelled", "b cancelled" }, log)
  end)

  helper.it("cancelling the caller of race cancels and awaits its children", function()
    local log = {}
    local caller = async.spawn(function()
      return async.race(slow_child(log, "a"), slow_child(log, "b"))
    end)
    async.sleep(0.01)
    caller:cancel()
    local ok, err = pcall(caller.await, caller)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    table.sort(log)
    assert.same({ "a cancelled", "b cancelled" }, log)
  end)
end)

describe("async.wait", function()
  helper.it("return_when = all returns every task as done and never raises their errors", function()
    local a, b, c = after(0.01, "a"), after(0.02, "b", true), after(0.005, "c")
    local done, pending = async.wait({ a, b, c }, { return_when = "all" })
    assert.same({}, pending)
    assert.equal(3, #done)
    assert.same(set_of({ a, b, c }), set_of(done))
    assert.equal("b", b:error())
  end)

  helper.it("waits for all by default", function()
    local a, b = after(0.01, "a"), after(0.02, "b")
    local done, pending = async.wait({ a, b })
    assert.equal(2, #done)
    assert.equal(0, #pending)
  end)

  helper.it("return_when = first returns as soon as one finishes and cancels nothing", function()
    local a, b = after(0.01, "a"), after(30, "b")
    local f = async.Future()
    local done, pending = async.wait({ a, b, f }, { return_when = "first" })
    assert.same({ a }, done)
    assert.same(set_of({ b, f }), set_of(pending))
    assert.equal(2, #pending)
    assert.is_false(b:done())
    assert.is_false(f:done())
    b:cancel()
    pcall(b.await, b)
  end)

  helper.it("return_when = first counts a failure as finishing", function()
    local a, b = after(0.01, "x", true), after(30, "b")
    local done, pending = async.wait({ a, b }, { return_when = "first" })
    assert.same({ a }, done)
    assert.same({ b }, pending)
    b:cancel()
    pcall(b.await, b)
  end)

  helper.it("return_when = first_error returns at the first failure", function()
    local ok1 = after(0.005, "ok")
    local bad = after(0.02, "bad", true)
    local slow = after(30, "slow")
    local done, pending = async.wait({ ok1, bad, slow }, { return_when = "first_error" })
    assert.same(set_of({ ok1, bad }), set_of(done))
    assert.equal(2, #done)
    assert.same({ slow }, pending)
    assert.is_false(slow:done())
    slow:cancel()
    pcall(slow.await, slow)
  end)

  helper.it("return_when = first_error waits for all when nothing fails", function()
    local a, b = after(0.005, "a"), after(0.02, "b")
    local done, pending = async.wait({ a, b }, { return_when = "first_error" })
    assert.equal(2, #done)
    assert.same({}, pending)
  end)

  helper.it("timeout returns what is done so far and cancels nothing", function()
    local a, b = after(0.005, "a"), after(30, "b")
    local t0 = async.now()
    local done, pending = async.wait({ a, b }, { timeout = 0.05 })
    local dt = async.now() - t0
    assert.is_true(dt >= 0.04, "returned after " .. dt)
    assert.same({ a }, done)
    assert.same({ b }, pending)
    assert.is_false(b:done())
    b:cancel()
    pcall(b.await, b)
  end)
end)

describe("async.race", function()
  helper.it("returns the results of the first to finish and cancels and awaits the others", function()
    local log = {}
    local loser_task = async.spawn(slow_child(log, "loser task"))
    local loser_future = async.Future()
    local r = table.pack(async.race(
      slow_child(log, "loser fn"),
      function() async.sleep(0.01) return "winner", "second" end,
      loser_task,
      loser_future))
    assert.same({ n = 2, "winner", "second" }, r)
    table.sort(log)
    assert.same({ "loser fn cancelled", "loser task cancelled" }, log)
    assert.is_true(loser_task:cancelled())
    assert.is_true(loser_future:done())
  end)

  helper.it("raises the error of the first to finish, after cancelling the others", function()
    local e = { "first failure" }
    local log = {}
    local ok, err = pcall(async.race,
      slow_child(log, "other"),
      function() async.sleep(0.01) error(e) end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.same({ "other cancelled" }, log)
  end)

  helper.it("accepts a Future as the winner", function()
    local f = async.Future()
    local log = {}
    async.spawn(function() async.sleep(0.01) f:set_result("future wins") end)
    assert.equal("future wins", async.race(slow_child(log, "fn"), f))
    assert.same({ "fn cancelled" }, log)
  end)
end)

describe("async.as_completed", function()
  helper.it("yields the tasks in completion order, failed ones included", function()
    local a, b, c = after(0.06, "a"), after(0.01, "b", true), after(0.03, "c")
    local order = {}
    for t in async.as_completed({ a, b, c }) do
      assert.is_true(t:done())
      order[#order + 1] = t
    end
    assert.equal(3, #order)
    assert.equal(b, order[1])
    assert.equal(c, order[2])
    assert.equal(a, order[3])
    assert.equal("c", order[2]:await())
  end)

  helper.it("raises a timeout error at the timeout", function()
    local a, b = after(0.01, "a"), after(30, "b")
    local got = {}
    local t0 = async.now()
    local ok, err = pcall(function()
      for t in async.as_completed({ a, b }, { timeout = 0.05 }) do
        got[#got + 1] = t
      end
    end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err), tostring(err))
    assert.is_true(async.now() - t0 >= 0.04)
    assert.same({ a }, got)
    b:cancel()
    pcall(b.await, b)
  end)
end)

describe("async.wait_for", function()
  helper.it("returns the results when in time (task, future, function)", function()
    assert.equal("t", async.wait_for(after(0.01, "t"), 1))
    local f = async.Future()
    async.spawn(function() async.sleep(0.01) f:set_result("f", 2) end)
    assert.same({ n = 2, "f", 2 }, table.pack(async.wait_for(f, 1)))
    assert.same({ n = 2, "fn", nil }, table.pack(async.wait_for(function()
      async.sleep(0.01) return "fn", nil
    end, 1)))
  end)

  helper.it("with seconds <= 0 returns the results of what is done already (as asyncio)", function()
    local t = async.spawn(function() return "t", 2 end)
    local f = async.Future()
    f:set_result("f")
    async.sleep(0)
    assert.same({ n = 2, "t", 2 }, table.pack(async.wait_for(t, 0)))
    assert.equal("f", async.wait_for(f, 0))
    assert.equal("f", async.wait_for(f, -1))  -- a negative time left is the same as 0
    -- a failed one raises its error, unchanged; nothing is cancelled
    local e = {}
    local bad = async.spawn(function() error(e) end)
    async.sleep(0)
    local ok, err = pcall(async.wait_for, bad, 0)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
  end)

  helper.it("with seconds <= 0 cancels what is pending and times out", function()
    local log = {}
    for _, s in ipairs({ 0, -5 }) do
      local t = async.spawn(slow_child(log, "task"))
      async.sleep(0)  -- running: it sleeps
      local ok, err = pcall(async.wait_for, t, s)
      assert.is_false(ok)
      assert.is_true(async.is_timeout(err))
      assert.is_true(t:cancelled())
    end
    assert.same({ "task cancelled", "task cancelled" }, log)  -- awaited: its cleanup ran
    local ok, err = pcall(async.wait_for, function() return "never runs" end, 0)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    -- async.timeout(0, fn) still cancels fn at its first suspension
    local reached = false
    ok, err = pcall(async.timeout, 0, function() async.sleep(0); reached = true end)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_false(reached)
  end)

  helper.it("passes the child's error through unchanged", function()
    local e = {}
    local ok, err = pcall(async.wait_for, function() error(e) end, 1)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
  end)

  helper.it("on expiry cancels and awaits a task, then raises a timeout error", function()
    local log = {}
    local t = async.spawn(slow_child(log, "task"))
    local ok, err = pcall(async.wait_for, t, 0.02)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.equal("timeout", err.kind)
    assert.same({ "task cancelled" }, log) -- its 20 ms cleanup finished first
    assert.is_true(t:cancelled())
    -- the caller awaits normally afterwards
    async.sleep(0.001)
  end)

  helper.it("on expiry cancels a function child and a future", function()
    local log = {}
    local ok, err = pcall(async.wait_for, slow_child(log, "fn"), 0.02)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.same({ "fn cancelled" }, log)

    local f = async.Future()
    ok, err = pcall(async.wait_for, f, 0.02)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    assert.is_true(f:done())
  end)

  helper.it("cancelling the caller cancels the child", function()
    local log = {}
    local child = async.spawn(slow_child(log, "child"))
    local caller = async.spawn(function() return async.wait_for(child, 30) end)
    async.sleep(0.01)
    caller:cancel()
    local ok, err = pcall(caller.await, caller)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.same({ "child cancelled" }, log)
    assert.is_true(child:cancelled())
  end)
end)

describe("async.shield", function()
  helper.it("returns a Future that settles as the task does", function()
    local t = after(0.01, "shielded value")
    local s = async.shield(t)
    assert.equal("shielded value", s:await())
    local bad = after(0.01, "bad", true)
    local ok, err = pcall(async.await, async.shield(bad))
    assert.is_false(ok)
    assert.equal("bad", err)
  end)

  helper.it("cancelling the shield Future does not cancel the task", function()
    local t = after(0.05, "survivor")
    local s = async.shield(t)
    s:cancel()
    assert.is_true(s:done())
    assert.equal("survivor", t:await())
    assert.is_false(t:cancelled())
  end)

  helper.it("protects the task from wait_for, gather and race", function()
    local t = after(0.05, "kept")
    local ok, err = pcall(async.wait_for, async.shield(t), 0.01)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err))
    ok = pcall(async.gather, async.shield(t), function() error("x", 0) end)
    assert.is_false(ok)
    assert.equal("other", async.race(async.shield(t), function() return "other" end))
    assert.is_false(t:done())
    assert.equal("kept", t:await())
    assert.is_false(t:cancelled())
  end)
end)
