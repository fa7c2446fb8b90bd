-- async.map: results in input order, bounded concurrency (the observed maximum), failures like
-- gather (no new item after the first failure, running ones cancelled and awaited, the error
-- raised unchanged), return_errors, deadlines and cancellation of the caller.
local helper = require("spec.helper")
local async = helper.async

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- an fn for map that tracks how many calls are in flight
local function tracker()
  local tr = { inside = 0, max = 0, started = {} }
  function tr.fn(item, index)
    tr.inside = tr.inside + 1
    if tr.inside > tr.max then tr.max = tr.inside end
    tr.started[#tr.started + 1] = index
    -- a varying duration, so that calls finish out of order
    async.sleep(((item * 7) % 5) * 0.002)
    tr.inside = tr.inside - 1
    return item * 10, "ignored second result"
  end
  return tr
end

-- a call that sleeps 30 s; its <close> does an awaiting cleanup (shielded) and logs
local function slow(log, label)
  local _ <close> = setmetatable({}, { __close = function(_, e)
    async.shielded(async.sleep, 0.02)
    log[#log + 1] = label .. (async.is_cancelled(e) and " cancelled" or " closed")
  end })
  async.sleep(30)
  return "slow done"
end

describe("async.map", function()
  helper.it("returns the first result of each call, in input order, with n", function()
    local tr = tracker()
    local r = async.map(tr.fn, range(12), { concurrency = 3 })
    local want = { n = 12 }
    for i = 1, 12 do want[i] = i * 10 end
    assert.same(want, r)
  end)

  helper.it("calls fn(item, index)", function()
    local seen = {}
    local r = async.map(function(item, index)
      seen[#seen + 1] = { item, index }
      return item .. index
    end, { "a", "b", "c" }, { concurrency = 1 })
    assert.same({ n = 3, "a1", "b2", "c3" }, r)
    assert.same({ { "a", 1 }, { "b", 2 }, { "c", 3 } }, seen)
  end)

  helper.it("keeps nil results in their slots", function()
    local r = async.map(function(item)
      async.sleep(0)
      if item % 2 == 0 then return nil end
      return item
    end, range(5), { concurrency = 2 })
    assert.same({ n = 5, 1, nil, 3, nil, 5 }, r)
  end)

  helper.it("returns {n = 0} for an empty list without calling fn", function()
    local called = false
    assert.same({ n = 0 }, async.map(function() called = true end, {}, { concurrency = 4 }))
    assert.same({ n = 0 }, async.map(function() called = true end, {}))
    assert.is_false(called)
  end)

  helper.it("never has more than n calls in flight, and reaches n with enough work", function()
    for _, n in ipairs({ 1, 2, 4, 7 }) do
      local tr = tracker()
      local r = async.map(tr.fn, range(30), { concurrency = n })
      assert.equal(30, r.n)
      assert.equal(n, tr.max, "observed maximum with concurrency = " .. n)
      assert.equal(0, tr.inside)
      -- items start in input order
      assert.same(range(30), tr.started)
    end
  end)

  helper.it("runs every call at once when concurrency is left out (it defaults to #list)", function()
    local tr = tracker()
    async.map(tr.fn, range(25))
    assert.equal(25, tr.max)
  end)

  helper.it("handles concurrency larger than the list", function()
    local tr = tracker()
    local r = async.map(tr.fn, range(3), { concurrency = 100 })
    assert.same({ n = 3, 10, 20, 30 }, r)
    assert.equal(3, tr.max)
  end)

  helper.it("with concurrency 1 runs the calls one after the other", function()
    local log = {}
    async.map(function(item)
      log[#log + 1] = "start " .. item
      async.sleep(0.001)
      log[#log + 1] = "end " .. item
    end, range(3), { concurrency = 1 })
    assert.same({ "start 1", "end 1", "start 2", "end 2", "start 3", "end 3" }, log)
  end)

  helper.it("after a failure starts nothing new, cancels and awaits running calls, raises it", function()
    local e = { "item 2 failed" }
    local log, started = {}, {}
    local ok, err = pcall(async.map, function(item)
      started[#started + 1] = item
      if item == 2 then
        async.sleep(0.01)
        error(e)
      end
      return slow(log, "item " .. item)
    end, range(10), { concurrency = 3 })
    assert.is_false(ok)
    assert.is_true(rawequal(e, err), "the error was not passed unchanged: " .. tostring(err))
    table.sort(started)
    assert.same({ 1, 2, 3 }, started)
    table.sort(log)
    -- both cleanups (which await 20 ms) finished before map raised
    assert.same({ "item 1 cancelled", "item 3 cancelled" }, log)
  end)

  helper.it("raises a string error unchanged, the first failure in time", function()
    local ok, err = pcall(async.map, function(item)
      async.sleep(item == 1 and 0.05 or 0.005)
      error("failed " .. item, 0)
    end, { 1, 2 }, { concurrency = 2 })
    assert.is_false(ok)
    assert.equal("failed 2", err)
  end)

  helper.it("with return_errors puts error values in their slots and runs every item", function()
    local e = { "boom" }
    local tr = tracker()
    local r = async.map(function(item, index)
      if item == 2 then async.sleep(0.001) error(e) end
      if item == 4 then error("exact", 0) end
      return tr.fn(item, index)
    end, range(6), { concurrency = 2, return_errors = true })
    assert.equal(6, r.n)
    assert.equal(10, r[1])
    assert.is_true(rawequal(e, r[2]))
    assert.equal(30, r[3])
    assert.equal("exact", r[4])
    assert.equal(50, r[5])
    assert.equal(60, r[6])
    assert.is_true(tr.max <= 2) -- 1,3,5,6 went through fn; never more than 2 at a time
  end)

  helper.it("with return_errors a Cancelled raised by fn itself goes in its slot", function()
    local r = async.map(function(item)
      if item == 2 then
        local victim = async.spawn(function() async.sleep(30) end)
        async.yield()
        victim:cancel()
        return victim:await() -- raises the victim's Cancelled: map itself was not cancelled
      end
      async.sleep(0.005)
      return item
    end, range(3), { concurrency = 3, return_errors = true })
    assert.equal(3, r.n)
    assert.equal(1, r[1])
    assert.is_true(async.is_cancelled(r[2]), tostring(r[2]))
    assert.equal(3, r[3])
  end)

  helper.it("when the caller is cancelled cancels and awaits the running calls and starts no more", function()
    local log, started = {}, {}
    local state_at_catch
    local caller = async.spawn(function()
      local ok, err = pcall(async.map, function(item)
        started[#started + 1] = item
        return slow(log, "item " .. item)
      end, range(6), { concurrency = 2 })
      state_at_catch = { ok, async.is_cancelled(err), #log }
      error(err, 0)
    end)
    async.sleep(0.01)
    caller:cancel()
    local ok, err = pcall(caller.await, caller)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.same({ false, true, 2 }, state_at_catch)
    table.sort(log)
    assert.same({ "item 1 cancelled", "item 2 cancelled" }, log)
    table.sort(started)
    assert.same({ 1, 2 }, started)
  end)

  helper.it("under an expiring deadline cancels and awaits the running calls, then times out", function()
    local log, started = {}, {}
    local ok, err = pcall(async.timeout, 0.03, async.map, function(item)
      started[#started + 1] = item
      return slow(log, "item " .. item)
    end, range(5), { concurrency = 2 })
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err), tostring(err))
    table.sort(log)
    assert.same({ "item 1 cancelled", "item 2 cancelled" }, log)
    table.sort(started)
    assert.same({ 1, 2 }, started)
  end)
end)
