-- RateLimiter: token bucket that starts full, burst, cost, FIFO waiters, guard/with, deadlines,
-- cancellation, and the long-run rate under concurrent load (within 5%).
-- Timing: only lower bounds (a sleep lasts at least its time), generous upper bounds, and counts
-- over a window for the rate.
local helper = require("spec.helper")
local async = helper.async

local started = helper.started
-- (rate limiter waits are longer: 5 s before a wait counts as hung)
local function finish(t, secs) return helper.finish(t, secs or 5) end
local function expect_cancelled(t) return helper.expect_cancelled(t, 5) end

-- calls fn(...) `n` times; asserts that none of the calls suspended (another ready task did not
-- get to run meanwhile)
local function all_at_once(n, fn, ...)
  local ran = false
  local marker = async.spawn(function() ran = true end)
  for i = 1, n do
    fn(...)
    assert.is_false(ran, "call #" .. i .. " suspended")
  end
  marker:await()
end

-- seconds fn(...) took
local function timed(fn, ...)
  local t0 = async.now()
  fn(...)
  return async.now() - t0
end

describe("async.RateLimiter", function()
  helper.it("starts full: `rate` acquisitions at once, then one per rate-th of `per`", function()
    local r = async.RateLimiter({ rate = 5, per = 1 })
    all_at_once(5, r.acquire, r)
    local dt = timed(r.acquire, r) -- the next token comes after 0.2 s
    assert.is_true(dt >= 0.15, "waited only " .. dt)
    assert.is_true(dt < 1.0, "waited " .. dt)
  end)

  helper.it("acquire returns true", function()
    local r = async.RateLimiter({ rate = 2 })
    assert.is_true(r:acquire())
  end)

  helper.it("per defaults to 1 second and burst to rate", function()
    local r = async.RateLimiter({ rate = 3 })
    all_at_once(3, r.acquire, r)
    local dt = timed(r.acquire, r) -- 1/3 s
    assert.is_true(dt >= 0.28, "waited only " .. dt)
    assert.is_true(dt < 1.0, "waited " .. dt)
  end)

  helper.it("burst sets the size of the bucket, also after a long idle time", function()
    local r = async.RateLimiter({ rate = 10, per = 1, burst = 2 })
    all_at_once(2, r.acquire, r)
    local dt = timed(r.acquire, r)
    assert.is_true(dt >= 0.07, "waited only " .. dt)
    async.sleep(0.5) -- 5 tokens' worth of time, but the bucket holds 2
    all_at_once(2, r.acquire, r)
    dt = timed(r.acquire, r)
    assert.is_true(dt >= 0.07, "waited only " .. dt)
  end)

  helper.it("per scales the period", function()
    local r = async.RateLimiter({ rate = 2, per = 0.5, burst = 1 }) -- 4 per second
    all_at_once(1, r.acquire, r)
    local dt = timed(r.acquire, r) -- 0.25 s
    assert.is_true(dt >= 0.2, "waited only " .. dt)
    assert.is_true(dt < 1.0, "waited " .. dt)
  end)

  helper.it("acquire(cost) takes cost tokens", function()
    local r = async.RateLimiter({ rate = 10, burst = 4 })
    all_at_once(1, r.acquire, r, 3)
    all_at_once(1, r.acquire, r, 1)
    local dt = timed(r.acquire, r, 2) -- 2 tokens: 0.2 s
    assert.is_true(dt >= 0.15, "waited only " .. dt)
    assert.is_true(dt < 1.0, "waited " .. dt)
  end)

  helper.it("a cost above burst raises a clear error", function()
    local r = async.RateLimiter({ rate = 10, burst = 3 })
    local ok, err = pcall(r.acquire, r, 4)
    assert.is_false(ok)
    assert.is_string(err)
    all_at_once(3, r.acquire, r) -- nothing was taken
  end)

  helper.it("serves waiters in the order they started waiting (FIFO)", function()
    local r = async.RateLimiter({ rate = 40, burst = 1 })
    r:acquire()
    local order, tasks = {}, {}
    for i = 1, 5 do
      tasks[i] = async.spawn(function() r:acquire() order[#order + 1] = i end)
    end
    for i = 1, 5 do finish(tasks[i]) end
    assert.same({ 1, 2, 3, 4, 5 }, order)
  end)

  helper.it("a waiter with a large cost is not overtaken by later small ones", function()
    local r = async.RateLimiter({ rate = 50, burst = 5 })
    r:acquire(5)
    local order = {}
    local big = started(function() r:acquire(5) order[#order + 1] = "big" end)
    -- after 30 ms the bucket holds ~1.5 tokens: enough for small, not for big, which is first
    local small = started(function() async.sleep(0.03) r:acquire(1) order[#order + 1] = "small" end)
    finish(big)
    finish(small)
    assert.same({ "big", "small" }, order)
  end)

  helper.it("guard and with take a token", function()
    local r = async.RateLimiter({ rate = 4, burst = 2 })
    do
      local _ <close> = r:guard()
    end
    assert.same({ n = 3, "a", nil, 3 }, table.pack(r:with(function(x, y, z) return x, y, z end, "a", nil, 3)))
    local e = { "limited failure" }
    local ok, err = pcall(r.with, r, function() error(e) end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    -- guard, with and the failing with took the 2 tokens of the bucket and the next one
    local dt = timed(r.acquire, r)
    assert.is_true(dt >= 0.1, "waited only " .. dt)
  end)

  helper.it("a cancelled waiter takes no token: the next waiter is not delayed", function()
    local r = async.RateLimiter({ rate = 2, burst = 1 }) -- a token every 0.5 s
    local t0 = async.now()
    r:acquire()
    local a = started(function() r:acquire() return "a" end)
    local b = started(function() r:acquire() return async.now() end)
    a:cancel()
    expect_cancelled(a)
    local tb = finish(b) - t0
    assert.is_true(tb >= 0.4, "b acquired after " .. tb)
    assert.is_true(tb < 0.9, "b acquired after " .. tb .. " (a's token was lost)")
  end)

  helper.it("acquire obeys a deadline; a timed-out waiter takes no token", function()
    local r = async.RateLimiter({ rate = 2, burst = 1 })
    local t0 = async.now()
    r:acquire()
    local ok, err = pcall(async.timeout, 0.02, r.acquire, r)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err), tostring(err))
    r:acquire()
    local dt = async.now() - t0
    assert.is_true(dt >= 0.4, "acquired after " .. dt)
    assert.is_true(dt < 0.9, "acquired after " .. dt .. " (the timed-out waiter took a token)")
  end)

  helper.it("keeps the long-run rate within 5% under concurrent load", function()
    local RATE, BURST, WORKERS = 50, 50, 20
    local t_create = async.now()
    local r = async.RateLimiter({ rate = RATE, per = 1 })
    local stamps = {}
    local workers = {}
    for i = 1, WORKERS do
      workers[i] = async.spawn(function()
        while true do
          r:acquire()
          stamps[#stamps + 1] = async.now()
          if #stamps % 7 == 0 then async.yield() end
        end
      end)
    end
    async.sleep(2.7)
    for i = 1, WORKERS do workers[i]:cancel() end
    for i = 1, WORKERS do expect_cancelled(workers[i]) end
    local t_end = async.now()
    table.sort(stamps)
    -- never more than the bucket allows, at any moment
    for k, s in ipairs(stamps) do
      local allowed = BURST + RATE * (s - t_create) + 1
      if k > allowed then
        error(("acquisition #%d at %.3f s: more than the %.1f allowed"):format(k, s - t_create, allowed))
      end
    end
    -- the burst came at once: the first 50 before any refill could matter
    assert.is_true(#stamps >= BURST)
    -- long-run rate: count over [t0 + 0.5, t0 + 2.5), after the burst was spent
    local from, to = t_create + 0.5, t_create + 2.5
    assert.is_true(t_end >= to)
    local n = 0
    for _, s in ipairs(stamps) do
      if s >= from and s < to then n = n + 1 end
    end
    local rate = n / (to - from)
    assert.is_true(math.abs(rate - RATE) <= 0.05 * RATE,
      ("measured %.1f acquisitions/s over 2 s, configured %d"):format(rate, RATE))
  end)
end)
