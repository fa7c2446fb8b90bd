-- Synchronisation primitives: Event, Lock, Semaphore, BoundedSemaphore, Condition.
-- FIFO wake-ups, fairness, <close> guards, deadlines, and cancellation of a waiter at every
-- point (also after a permit was handed to it but before it resumed).
local helper = require("spec.helper")
local async = helper.async

local settle, started, finish = helper.settle, helper.started, helper.finish
local expect_cancelled, expect_timeout = helper.expect_cancelled, helper.expect_timeout
local expect_plain_error = helper.expect_plain_error
local completes_without_suspending = helper.completes_without_suspending

-- {====== Event ======}

describe("async.Event", function()
  helper.it("starts clear; set, clear and is_set", function()
    local e = async.Event()
    assert.is_false(e:is_set())
    e:set()
    assert.is_true(e:is_set())
    e:set()
    assert.is_true(e:is_set())
    e:clear()
    assert.is_false(e:is_set())
  end)

  helper.it("wait returns at once when set, without suspending", function()
    local e = async.Event()
    e:set()
    e:wait()
    completes_without_suspending(e.wait, e)
  end)

  helper.it("wakes every waiter on set, in the order they started waiting", function()
    local e = async.Event()
    local order, tasks = {}, {}
    for i = 1, 5 do
      tasks[i] = async.spawn(function() e:wait() order[#order + 1] = i end)
    end
    settle()
    assert.same({}, order)
    for i = 1, 5 do assert.is_false(tasks[i]:done()) end
    e:set()
    for i = 1, 5 do finish(tasks[i]) end
    assert.same({ 1, 2, 3, 4, 5 }, order)
  end)

  helper.it("wakes all waiters at the time of set even if clear follows at once (no lost wake-up)", function()
    local e = async.Event()
    local woke, tasks = 0, {}
    for i = 1, 10 do
      tasks[i] = async.spawn(function() e:wait() woke = woke + 1 end)
    end
    settle()
    e:set()
    e:clear()
    for i = 1, 10 do finish(tasks[i]) end
    assert.equal(10, woke)
    assert.is_false(e:is_set())
    -- a waiter arriving after the clear waits for the next set
    local late = async.spawn(function() e:wait() return "late woke" end)
    settle()
    assert.is_false(late:done())
    e:set()
    assert.equal("late woke", finish(late))
  end)

  helper.it("clear while tasks wait keeps them waiting for the next set", function()
    local e = async.Event()
    local a = started(function() e:wait() return "a" end)
    local b = started(function() e:wait() return "b" end)
    e:clear()
    settle()
    assert.is_false(a:done())
    e:set()
    assert.equal("a", finish(a))
    assert.equal("b", finish(b))
  end)

  helper.it("a cancelled waiter leaves the others waiting and waking normally", function()
    local e = async.Event()
    local a = started(function() e:wait() return "a" end)
    local b = started(function() e:wait() return "b" end)
    local c = started(function() e:wait() return "c" end)
    b:cancel()
    expect_cancelled(b)
    settle()
    assert.is_false(a:done())
    assert.is_false(c:done())
    e:set()
    assert.equal("a", finish(a))
    assert.equal("c", finish(c))
  end)

  helper.it("a waiter cancelled after set, before it resumed, raises Cancelled; the others wake", function()
    local e = async.Event()
    local a = started(function() e:wait() return "a" end)
    local b = started(function() e:wait() return "b" end)
    e:set()
    a:cancel()
    expect_cancelled(a)
    assert.equal("b", finish(b))
    assert.is_true(e:is_set())
  end)

  helper.it("wait obeys a deadline, and the event works afterwards", function()
    local e = async.Event()
    expect_timeout(0.02, e.wait, e)
    local w = started(function() e:wait() return "woke" end)
    e:set()
    assert.equal("woke", finish(w))
    e:wait()
  end)
end)

-- {====== Lock ======}

describe("async.Lock", function()
  helper.it("acquire returns true; locked reports the state; release frees it", function()
    local l = async.Lock()
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    assert.is_true(l:locked())
    l:release()
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    l:release()
  end)

  helper.it("an uncontended acquire does not suspend", function()
    local l = async.Lock()
    local ran = false
    local other = async.spawn(function() ran = true end)
    l:acquire()
    assert.is_false(ran)
    l:release()
    other:await()
    completes_without_suspending(function() l:acquire() l:release() end)
    assert.is_false(l:locked())
  end)

  helper.it("gives mutual exclusion", function()
    local l = async.Lock()
    local inside, max_inside = 0, 0
    local tasks = {}
    for i = 1, 20 do
      tasks[i] = async.spawn(function()
        for _ = 1, 5 do
          l:acquire()
          inside = inside + 1
          if inside > max_inside then max_inside = inside end
          async.sleep(0)
          inside = inside - 1
          l:release()
          async.yield()
        end
      end)
    end
    for i = 1, 20 do finish(tasks[i]) end
    assert.equal(1, max_inside)
    assert.is_false(l:locked())
  end)

  helper.it("waiters acquire in the order they started waiting (FIFO)", function()
    local l = async.Lock()
    l:acquire()
    local order, tasks = {}, {}
    for i = 1, 6 do
      tasks[i] = async.spawn(function()
        l:acquire()
        order[#order + 1] = i
        async.yield()
        l:release()
      end)
    end
    settle()
    assert.same({}, order)
    l:release()
    for i = 1, 6 do finish(tasks[i]) end
    assert.same({ 1, 2, 3, 4, 5, 6 }, order)
    assert.is_false(l:locked())
  end)

  helper.it("is fair under contention: 1,000 tasks acquire in the order they started waiting", function()
    local l = async.Lock()
    local N, ROUNDS = 1000, 3
    local log, count, tasks = {}, {}, {}
    l:acquire()
    for i = 1, N do
      count[i] = 0
      tasks[i] = async.spawn(function()
        for _ = 1, ROUNDS do
          l:acquire()
          log[#log + 1] = i
          count[i] = count[i] + 1
          async.yield()
          l:release()
        end
      end)
    end
    async.yield() -- each task now waits, in spawn order
    assert.equal(0, #log)
    l:release()
    for i = 1, N do finish(tasks[i], 8) end
    assert.equal(N * ROUNDS, #log)
    for i = 1, N do
      if count[i] ~= ROUNDS then assert.equal(ROUNDS, count[i], "acquisitions of task " .. i) end
    end
    -- after releasing, a task waits behind every task already waiting: round robin
    for r = 0, ROUNDS - 1 do
      for i = 1, N do
        if log[r * N + i] ~= i then
          assert.equal(i, log[r * N + i], "acquisition #" .. (r * N + i))
        end
      end
    end
    assert.is_false(l:locked())
  end)

  helper.it("acquire by the task holding it raises (not reentrant); the lock stays held", function()
    local l = async.Lock()
    l:acquire()
    expect_plain_error({ "acquire", "lock", "reentrant", "held", "already" }, l.acquire, l)
    assert.is_true(l:locked())
    l:release()
    assert.is_false(l:locked())
  end)

  helper.it("release of a lock the task does not hold raises", function()
    local l = async.Lock()
    expect_plain_error({ "release", "lock", "held" }, l.release, l)
    assert.is_false(l:locked())
    l:acquire()
    local other = async.spawn(function()
      return pcall(l.release, l)
    end)
    local ok, err = finish(other)
    assert.is_false(ok, "another task released the lock")
    assert.is_string(err)
    assert.is_true(l:locked())
    l:release() -- still ours
    assert.is_false(l:locked())
  end)

  helper.it("guard releases at block exit", function()
    local l = async.Lock()
    do
      local _ <close> = l:guard()
      assert.is_true(l:locked())
    end
    assert.is_false(l:locked())
  end)

  helper.it("guard releases when the block raises, and the error passes unchanged", function()
    local l = async.Lock()
    local e = { "guarded failure" }
    local ok, err = pcall(function()
      local _ <close> = l:guard()
      async.sleep(0)
      error(e)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    l:release()
  end)

  helper.it("guard releases when the task is cancelled inside the block", function()
    local l = async.Lock()
    local t = started(function()
      local _ <close> = l:guard()
      async.sleep(30)
    end)
    assert.is_true(l:locked())
    t:cancel()
    expect_cancelled(t)
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    l:release()
  end)

  helper.it("a guard cancelled while waiting raises Cancelled and releases nothing", function()
    local l = async.Lock()
    l:acquire()
    local reached = false
    local t = started(function()
      local _ <close> = l:guard()
      reached = true
    end)
    t:cancel()
    expect_cancelled(t) -- Cancelled, not a "release of a lock not held" error
    assert.is_false(reached)
    assert.is_true(l:locked()) -- still ours
    l:release()
    assert.is_false(l:locked())
  end)

  helper.it("with runs fn holding the lock and returns its results", function()
    local l = async.Lock()
    local r = table.pack(l:with(function(a, b)
      assert.is_true(l:locked())
      async.sleep(0)
      return a, nil, b, nil
    end, 1, 2))
    assert.same({ n = 4, 1, nil, 2, nil }, r)
    assert.is_false(l:locked())
  end)

  helper.it("with waits for the lock", function()
    local l = async.Lock()
    l:acquire()
    local t = started(function()
      return l:with(function() return "got it" end)
    end)
    settle()
    assert.is_false(t:done())
    l:release()
    assert.equal("got it", finish(t))
    assert.is_false(l:locked())
  end)

  helper.it("with releases on error (passed unchanged) and on cancellation", function()
    local l = async.Lock()
    local e = { "with failure" }
    local ok, err = pcall(l.with, l, function() async.sleep(0) error(e) end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.is_false(l:locked())

    local t = started(function() return l:with(async.sleep, 30) end)
    assert.is_true(l:locked())
    t:cancel()
    expect_cancelled(t)
    assert.is_false(l:locked())
  end)

  helper.it("a waiter cancelled while waiting: the lock goes to the next waiter", function()
    local l = async.Lock()
    l:acquire()
    local got = {}
    local function waiter(name)
      return async.spawn(function()
        l:acquire()
        got[#got + 1] = name
        l:release()
      end)
    end
    local a, b = waiter("a"), waiter("b")
    settle()
    a:cancel()
    expect_cancelled(a)
    assert.is_true(l:locked())
    l:release()
    finish(b)
    assert.same({ "b" }, got)
    assert.is_false(l:locked())
    assert.is_true(l:acquire()) -- no stuck waiter holds it
    l:release()
  end)

  helper.it("a waiter cancelled in the same step as the release: the lock goes to the next waiter", function()
    local l = async.Lock()
    l:acquire()
    local got = {}
    local function waiter(name)
      return async.spawn(function()
        l:acquire()
        got[#got + 1] = name
        l:release()
      end)
    end
    local a, b = waiter("a"), waiter("b")
    settle()
    a:cancel()
    l:release()
    expect_cancelled(a)
    finish(b)
    assert.same({ "b" }, got)
    assert.is_false(l:locked())
  end)

  helper.it("a lock handed to a waiter cancelled before it resumed passes to the next waiter", function()
    local l = async.Lock()
    l:acquire()
    local got = {}
    local function waiter(name)
      return async.spawn(function()
        l:acquire()
        got[#got + 1] = name
        l:release()
      end)
    end
    local a, b, c = waiter("a"), waiter("b"), waiter("c")
    settle()
    l:release() -- hands the lock to a, which has not resumed yet
    assert.is_true(a:cancel())
    expect_cancelled(a)
    finish(b)
    finish(c)
    assert.same({ "b", "c" }, got)
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    l:release()
  end)

  helper.it("a lock handed to a waiter cancelled before it resumed becomes free when nobody waits", function()
    local l = async.Lock()
    l:acquire()
    local a = started(function() l:acquire() return "acquired" end)
    l:release()
    assert.is_true(a:cancel())
    expect_cancelled(a)
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    l:release()
  end)

  helper.it("acquire obeys a deadline; the lock stays consistent", function()
    local l = async.Lock()
    l:acquire()
    local got = {}
    local timed = async.spawn(function()
      local ok, err = pcall(async.timeout, 0.03, l.acquire, l)
      return ok, async.is_timeout(err)
    end)
    local b = async.spawn(function()
      async.sleep(0.01) -- waits behind `timed`
      l:acquire()
      got[#got + 1] = "b"
      l:release()
    end)
    assert.same({ n = 2, false, true }, table.pack(finish(timed)))
    assert.is_true(l:locked())
    assert.same({}, got)
    l:release()
    finish(b)
    assert.same({ "b" }, got)
    assert.is_false(l:locked())
  end)
end)

-- {====== Semaphore ======}

describe("async.Semaphore", function()
  helper.it("acquire takes a permit (returning true), release gives one back; value counts them", function()
    local s = async.Semaphore(2)
    assert.equal(2, s:value())
    assert.is_true(s:acquire())
    assert.equal(1, s:value())
    assert.is_true(s:acquire())
    assert.equal(0, s:value())
    s:release()
    assert.equal(1, s:value())
    s:release()
    s:release() -- a plain Semaphore may go above its initial value
    assert.equal(3, s:value())
    assert.equal(0, async.Semaphore(0):value())
  end)

  helper.it("an acquire with a permit available does not suspend", function()
    local s = async.Semaphore(1)
    completes_without_suspending(s.acquire, s)
    assert.equal(0, s:value())
  end)

  helper.it("acquire waits for a release, which any task may do", function()
    local s = async.Semaphore(0)
    local t = started(function() return s:acquire() end)
    settle()
    assert.is_false(t:done())
    local releaser = async.spawn(function() s:release() end)
    assert.is_true(finish(t))
    finish(releaser)
    assert.equal(0, s:value())
  end)

  helper.it("wakes waiters in the order they started waiting (FIFO)", function()
    local s = async.Semaphore(0)
    local order, tasks = {}, {}
    for i = 1, 6 do
      tasks[i] = async.spawn(function() s:acquire() order[#order + 1] = i end)
    end
    settle()
    s:release()
    s:release()
    settle()
    assert.same({ 1, 2 }, order)
    for _ = 1, 4 do s:release() end
    for i = 1, 6 do finish(tasks[i]) end
    assert.same({ 1, 2, 3, 4, 5, 6 }, order)
    assert.equal(0, s:value())
  end)

  helper.it("never lets more than n tasks hold a permit (the observed maximum is n)", function()
    local s = async.Semaphore(3)
    local inside, max_inside = 0, 0
    local tasks = {}
    for i = 1, 20 do
      tasks[i] = async.spawn(function()
        s:with(function()
          inside = inside + 1
          if inside > max_inside then max_inside = inside end
          async.sleep(0.002)
          inside = inside - 1
        end)
      end)
    end
    for i = 1, 20 do finish(tasks[i]) end
    assert.equal(3, max_inside)
    assert.equal(3, s:value())
  end)

  helper.it("raises a clear argument error for a negative or non-number value", function()
    expect_plain_error({ "semaphore", "value", "argument" }, async.Semaphore, -1)
    expect_plain_error({ "semaphore", "value", "argument" }, async.Semaphore, "x")
  end)

  helper.it("guard and with give the permit back on exit, error and cancellation", function()
    local s = async.Semaphore(2)
    do
      local _ <close> = s:guard()
      assert.equal(1, s:value())
    end
    assert.equal(2, s:value())
    local e = { "sem failure" }
    local ok, err = pcall(function()
      local _ <close> = s:guard()
      async.sleep(0)
      error(e)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.equal(2, s:value())
    assert.same({ n = 2, "x", nil }, table.pack(s:with(function(a) return a, nil end, "x")))
    ok, err = pcall(s.with, s, function() error(e) end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.equal(2, s:value())
    local t = started(function()
      local _ <close> = s:guard()
      s:with(async.sleep, 30)
    end)
    assert.equal(0, s:value())
    t:cancel()
    expect_cancelled(t)
    assert.equal(2, s:value())
  end)

  helper.it("a waiter cancelled while waiting loses nothing: the permit goes to the next waiter", function()
    local s = async.Semaphore(0)
    local a = started(function() s:acquire() return "a" end)
    local b = started(function() s:acquire() return "b" end)
    a:cancel()
    expect_cancelled(a)
    assert.equal(0, s:value())
    s:release()
    assert.equal("b", finish(b))
    assert.equal(0, s:value())
    s:release()
    assert.equal(1, s:value())
    assert.is_true(s:acquire())
  end)

  helper.it("a waiter cancelled in the same step as the release: the next waiter gets the permit", function()
    local s = async.Semaphore(0)
    local a = started(function() s:acquire() return "a" end)
    local b = started(function() s:acquire() return "b" end)
    a:cancel()
    s:release()
    expect_cancelled(a)
    assert.equal("b", finish(b))
    assert.equal(0, s:value())
  end)

  helper.it("a permit handed to a waiter cancelled before it resumed passes to the next waiter", function()
    local s = async.Semaphore(0)
    local a = started(function() s:acquire() return "a" end)
    local b = started(function() s:acquire() return "b" end)
    local c = started(function() s:acquire() return "c" end)
    s:release() -- hands the permit to a, which has not resumed yet
    assert.is_true(a:cancel())
    expect_cancelled(a)
    assert.equal("b", finish(b))
    settle()
    assert.is_false(c:done()) -- one permit, one acquisition
    assert.equal(0, s:value())
    s:release()
    assert.equal("c", finish(c))
    assert.equal(0, s:value())
  end)

  helper.it("a permit handed to a waiter cancelled before it resumed goes back when nobody waits", function()
    local s = async.Semaphore(0)
    local a = started(function() s:acquire() return "a" end)
    s:release()
    assert.is_true(a:cancel())
    expect_cancelled(a)
    assert.equal(1, s:value())
    assert.is_true(s:acquire())
    assert.equal(0, s:value())
  end)

  helper.it("acquire obeys a deadline; no permit is lost or created", function()
    local s = async.Semaphore(0)
    expect_timeout(0.02, s.acquire, s)
    assert.equal(0, s:value())
    local b = started(function() s:acquire() return "b" end)
    s:release()
    assert.equal("b", finish(b))
    assert.equal(0, s:value())
    s:release()
    assert.equal(1, s:value())
  end)

  helper.it("keeps its count under random cancellations (no lost permit, no stuck waiter)", function()
    local s = async.Semaphore(3)
    local inside, max_inside = 0, 0
    local tasks = {}
    local seed = 12345
    local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n end
    for i = 1, 60 do
      tasks[i] = async.spawn(function()
        local _ <close> = s:guard()
        inside = inside + 1
        if inside > max_inside then max_inside = inside end
        local _ <close> = setmetatable({}, { __close = function() inside = inside - 1 end })
        for _ = 1, rnd(3) do async.yield() end
      end)
    end
    for _ = 1, 40 do
      local victim = tasks[rnd(60) + 1]
      if not victim:done() then victim:cancel() end
      for _ = 1, rnd(3) do async.yield() end
    end
    for i = 1, 60 do
      local ok, err = pcall(finish, tasks[i])
      assert.is_true(ok or async.is_cancelled(err), tostring(err))
    end
    assert.is_true(max_inside <= 3)
    assert.equal(0, inside)
    assert.equal(3, s:value())
  end)
end)

describe("async.BoundedSemaphore", function()
  helper.it("works like a Semaphore", function()
    local s = async.BoundedSemaphore(2)
    assert.equal(2, s:value())
    assert.is_true(s:acquire())
    assert.is_true(s:acquire())
    local t = started(function() return s:acquire() end)
    assert.is_false(t:done())
    s:release()
    assert.is_true(finish(t))
    s:release()
    s:release()
    assert.equal(2, s:value())
    assert.same({ n = 1, "w" }, table.pack(s:with(function() return "w" end)))
  end)

  helper.it("raises when released above its initial value, and keeps its value", function()
    local s = async.BoundedSemaphore(2)
    expect_plain_error({ "release", "bound", "semaphore" }, s.release, s)
    assert.equal(2, s:value())
    s:acquire()
    s:release()
    expect_plain_error({ "release", "bound", "semaphore" }, s.release, s)
    assert.equal(2, s:value())
  end)

  helper.it("raises a clear argument error for a negative value", function()
    expect_plain_error({ "semaphore", "value", "argument" }, async.BoundedSemaphore, -1)
  end)

  helper.it("a permit handed to a cancelled waiter comes back exactly once", function()
    local s = async.BoundedSemaphore(1)
    s:acquire()
    local a = started(function() s:acquire() return "a" end)
    s:release() -- hands the permit to a
    assert.is_true(a:cancel())
    expect_cancelled(a)
    assert.equal(1, s:value())
    expect_plain_error({ "release", "bound", "semaphore" }, s.release, s) -- no duplicate permit
    assert.equal(1, s:value())
  end)
end)

-- {====== Condition ======}

describe("async.Condition", function()
  -- a waiter that holds the lock around wait and reports what it saw
  local function cond_waiter(c, order, name)
    return async.spawn(function()
      return c:with(function()
        local r = c:wait()
        if order then order[#order + 1] = name end
        return r
      end)
    end)
  end

  helper.it("wait without holding the lock raises", function()
    local c = async.Condition()
    expect_plain_error({ "wait", "lock", "acquire", "held", "hold" }, c.wait, c)
  end)

  helper.it("wait releases the lock, and re-acquires it before returning true", function()
    local lock = async.Lock()
    local c = async.Condition(lock)
    local w = started(function()
      lock:acquire()
      local r = c:wait()
      local held = lock:locked()
      lock:release() -- raises if this task does not hold it
      return r, held
    end)
    assert.is_false(lock:locked()) -- released while waiting
    lock:acquire()
    c:notify()
    settle()
    assert.is_false(w:done()) -- notified, but the lock is ours
    lock:release()
    assert.same({ n = 2, true, true }, table.pack(finish(w)))
    assert.is_false(lock:locked())
  end)

  helper.it("notify(n) wakes n waiters, notify() one, notify_all the rest, in FIFO order", function()
    local c = async.Condition()
    local order, tasks = {}, {}
    for i = 1, 6 do tasks[i] = cond_waiter(c, order, i) end
    settle()
    c:with(function() c:notify(2) end)
    settle()
    assert.same({ 1, 2 }, order)
    c:with(function() c:notify() end)
    settle()
    assert.same({ 1, 2, 3 }, order)
    c:with(function() c:notify_all() end)
    for i = 1, 6 do assert.is_true(finish(tasks[i])) end
    assert.same({ 1, 2, 3, 4, 5, 6 }, order)
  end)

  helper.it("a notify with no waiter is not remembered", function()
    local c = async.Condition()
    c:with(function() c:notify() c:notify_all() end)
    local w = cond_waiter(c)
    settle()
    assert.is_false(w:done())
    c:with(function() c:notify() end)
    assert.is_true(finish(w))
  end)

  helper.it("wait_for returns the predicate's value, at once when it already holds", function()
    local c = async.Condition()
    local state = 0
    assert.equal("now", c:with(function()
      return c:wait_for(function() return "now" end)
    end))
    local w = async.spawn(function()
      return c:with(function()
        return c:wait_for(function()
          return state >= 3 and ("state " .. state)
        end)
      end)
    end)
    for i = 1, 2 do
      settle()
      assert.is_false(w:done())
      c:with(function() state = i c:notify_all() end)
    end
    settle()
    assert.is_false(w:done())
    c:with(function() state = 3 c:notify_all() end)
    assert.equal("state 3", finish(w))
  end)

  helper.it("guard and with hold the condition's lock", function()
    local lock = async.Lock()
    local c = async.Condition(lock)
    do
      local _ <close> = c:guard()
      assert.is_true(lock:locked())
    end
    assert.is_false(lock:locked())
    local e = { "cond failure" }
    local ok, err = pcall(function()
      local _ <close> = c:guard()
      error(e)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.is_false(lock:locked())
    assert.same({ n = 3, 1, nil, 3 }, table.pack(c:with(function(a, b, d)
      assert.is_true(lock:locked())
      return a, b, d
    end, 1, nil, 3)))
    assert.is_false(lock:locked())
  end)

  helper.it("two conditions can share one lock", function()
    local lock = async.Lock()
    local c1, c2 = async.Condition(lock), async.Condition(lock)
    local w1, w2 = cond_waiter(c1), cond_waiter(c2)
    settle()
    c2:with(function() c2:notify() end)
    assert.is_true(finish(w2))
    settle()
    assert.is_false(w1:done())
    lock:acquire()
    c1:notify()
    lock:release()
    assert.is_true(finish(w1))
  end)

  helper.it("a waiter cancelled while waiting re-acquires the lock before raising", function()
    local lock = async.Lock()
    local c = async.Condition(lock)
    local w = started(function()
      lock:acquire()
      local ok, err = pcall(c.wait, c)
      local held = lock:locked()
      lock:release() -- raises if this task does not hold it
      return ok, async.is_cancelled(err), held
    end)
    lock:acquire()
    w:cancel()
    settle()
    assert.is_false(w:done()) -- it needs the lock, which is ours
    lock:release()
    assert.same({ n = 3, false, true, true }, table.pack(finish(w)))
    assert.is_false(lock:locked())
  end)

  helper.it("wait obeys a deadline and re-acquires the lock before raising", function()
    local lock = async.Lock()
    local c = async.Condition(lock)
    local other = async.spawn(function()
      return c:with(function() return c:wait() end)
    end)
    lock:acquire()
    local ok, err = pcall(async.timeout, 0.02, c.wait, c)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(err), tostring(err))
    assert.is_true(lock:locked())
    c:notify() -- still works: goes to the other waiter
    lock:release()
    assert.is_true(finish(other))
    assert.is_false(lock:locked())
  end)

  helper.it("a notification for a waiter cancelled before it resumed passes to the next waiter", function()
    local c = async.Condition()
    local order = {}
    local a, b, d = cond_waiter(c, order, "a"), cond_waiter(c, order, "b"), cond_waiter(c, order, "d")
    settle()
    c:with(function()
      c:notify(1) -- notifies a
      assert.is_true(a:cancel())
    end)
    expect_cancelled(a)
    assert.is_true(finish(b))
    settle()
    assert.is_false(d:done()) -- one notification, one wake-up
    assert.same({ "b" }, order)
    c:with(function() c:notify() end)
    assert.is_true(finish(d))
    assert.same({ "b", "d" }, order)
  end)

  helper.it("a waiter cancelled in the same step as notify: the next waiter is notified", function()
    local c = async.Condition()
    local order = {}
    local a, b, d = cond_waiter(c, order, "a"), cond_waiter(c, order, "b"), cond_waiter(c, order, "d")
    settle()
    c:with(function()
      a:cancel()
      c:notify(1)
    end)
    expect_cancelled(a)
    assert.is_true(finish(b))
    settle()
    assert.is_false(d:done())
    c:with(function() c:notify_all() end)
    assert.is_true(finish(d))
    assert.same({ "b", "d" }, order)
  end)

  helper.it("guard releases the lock when the waiting task is cancelled", function()
    local lock = async.Lock()
    local c = async.Condition(lock)
    local w = started(function()
      local _ <close> = c:guard()
      c:wait()
    end)
    w:cancel()
    expect_cancelled(w)
    assert.is_false(lock:locked())
  end)

  helper.it("hands work from a producer to consumers (wait_for in a loop)", function()
    local c = async.Condition()
    local items, got, done = {}, {}, false
    local consumers = {}
    for i = 1, 3 do
      consumers[i] = async.spawn(function()
        while true do
          local more = c:with(function()
            c:wait_for(function() return #items > 0 or done end)
            if #items == 0 then return false end
            got[#got + 1] = table.remove(items, 1)
            return true
          end)
          if not more then return end
          async.yield()
        end
      end)
    end
    for v = 1, 50 do
      c:with(function() items[#items + 1] = v c:notify() end)
      if v % 7 == 0 then async.yield() end
    end
    c:with(function() done = true c:notify_all() end)
    for i = 1, 3 do finish(consumers[i]) end
    table.sort(got)
    local want = {}
    for v = 1, 50 do want[v] = v end
    assert.same(want, got)
  end)
end)
