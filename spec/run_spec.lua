-- async.run, spawn, current_task, now, sleep, yield: scheduling order, fairness, shutdown.
local helper = require("spec.helper")
local async = helper.async

describe("async.run", function()
  it("returns all of fn's results and passes its arguments", function()
    local r = table.pack(async.run(function(a, b, c)
      return c, b, a, nil
    end, 1, nil, "x"))
    assert.same({ n = 4, "x", nil, 1, nil }, r)
  end)

  it("runs fn as a task named main", function()
    local name, isnil
    async.run(function()
      name = async.current_task():name()
    end)
    isnil = async.current_task()
    assert.equal("main", name)
    assert.is_nil(isnil)
  end)

  it("raises fn's error value unchanged (tables keep their identity)", function()
    local e = { code = 42 }
    local ok, err = pcall(async.run, function() error(e) end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))

    ok, err = pcall(async.run, function() async.sleep(0) error("exact", 0) end)
    assert.is_false(ok)
    assert.equal("exact", err)
  end)

  it("can be called again after it returned (fresh loop each time)", function()
    for i = 1, 3 do
      assert.equal(i, async.run(function() async.sleep(0.001) return i end))
    end
  end)

  it("raises a clear error when called while a loop is running", function()
    local ok, err, inner_ran
    async.run(function()
      ok, err = pcall(async.run, function() inner_ran = true end)
      async.sleep(0) -- the outer loop still works afterwards
    end)
    assert.is_false(ok)
    assert.is_nil(inner_ran)
    local msg = tostring(err)
    assert.is_truthy(msg:find("run", 1, true), msg)
    assert.is_falsy(msg:find("C-call boundary", 1, true), msg)
  end)

  it("on shutdown cancels and awaits leftover tasks and timers; their <close> handlers run", function()
    local log, tasks = {}, {}
    local t0 = os.time()
    local r = async.run(function()
      tasks.sleeper = async.spawn(function()
        local _ <close> = setmetatable({}, { __close = function(_, e)
          log[#log + 1] = "sleeper closed " .. tostring(async.is_cancelled(e))
        end })
        async.sleep(30)
        log[#log + 1] = "sleeper woke"
      end)
      tasks.waiter = async.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          -- cleanup that must await uses shielded; run must wait for it
          async.shielded(async.sleep, 0.05)
          log[#log + 1] = "waiter cleaned up"
        end })
        async.Future():await()
        log[#log + 1] = "waiter resumed"
      end)
      tasks.spinner = async.spawn(function()
        local _ <close> = helper.closer(log, "spinner closed")
        while true do async.yield() end
      end)
      tasks.unstarted = async.spawn(function() async.sleep(30) end)
      async.sleep(0) -- the first three reach their suspension points
      tasks.late = async.spawn(function() async.sleep(30) end) -- never started
      return "main done"
    end)
    assert.equal("main done", r)
    assert.is_true(os.time() - t0 < 10)
    table.sort(log)
    assert.same({ "sleeper closed true", "spinner closed", "waiter cleaned up" }, log)
    for name, t in pairs(tasks) do
      assert.is_true(t:done(), name)
      assert.is_true(t:cancelled(), name)
    end
    assert.same({}, async.tasks())
  end)

  it("also cancels and awaits tasks spawned by cleanup code during shutdown", function()
    local log = {}
    local late
    local t0 = os.time()
    async.run(function()
      async.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          local ok, t = pcall(async.spawn, function()
            local _ <close> = helper.closer(log, "late task closed")
            async.sleep(30)
          end)
          if ok then late = t end
          log[#log + 1] = "first cleanup"
        end })
        async.sleep(30)
      end)
      async.sleep(0)
    end)
    assert.is_true(os.time() - t0 < 10)
    assert.equal("first cleanup", log[1])
    if late then -- (it may be cancelled before its body ever started)
      assert.is_true(late:done())
      assert.is_true(late:cancelled())
    end
    assert.same({}, async.tasks())
  end)

  it("still cancels leftover tasks (running their cleanup) when fn raises", function()
    local log = {}
    local e = setmetatable({}, { __tostring = function() return "main failed" end })
    local ok, err = pcall(async.run, function()
      async.spawn(function()
        local _ <close> = helper.closer(log, "child closed")
        async.sleep(30)
      end)
      async.sleep(0)
      error(e)
    end)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.same({ "child closed" }, log)
  end)
end)

describe("async.spawn", function()
  it("raises a clear error outside a running loop", function()
    local called = false
    local ok, err = pcall(async.spawn, function() called = true end)
    assert.is_false(ok)
    local msg = tostring(err)
    assert.is_truthy(msg:find("run") or msg:find("loop"), msg)
    assert.is_false(called)
  end)

  it("is an alias of create_task", function()
    assert.is_function(async.create_task)
    helper.run(function()
      local t = async.create_task(function(a) return a + 1 end, 41)
      assert.equal(42, t:await())
    end)
  end)

  helper.it("schedules the task without running it eagerly, passing the arguments", function()
    local log = {}
    local t = async.spawn(function(...)
      log[#log + 1] = table.pack(...)
    end, "a", nil, 3)
    assert.same({}, log)
    assert.is_false(t:done())
    async.yield()
    assert.same({ { n = 3, "a", nil, 3 } }, log)
    assert.is_true(t:done())
  end)

  helper.it("gives tasks distinct non-empty default names task-<number>", function()
    local a = async.spawn(function() end)
    local b = async.spawn(function() end)
    assert.matches("^task%-%d+$", a:name())
    assert.matches("^task%-%d+$", b:name())
    assert.not_equal(a:name(), b:name())
    a:await()
    b:await()
  end)
end)

describe("lifetimes", function()
  helper.it("tasks nobody references keep running to completion through garbage collections", function()
    local results = {}
    for i = 1, 200 do
      local f = async.Future()
      async.spawn(function() async.sleep(0.001 * (i % 7)) f:set_result(i) end)
      async.spawn(function()
        local v = f:await() -- (not `results[#results + 1] = f:await()`: the index is computed first)
        results[#results + 1] = v
      end)
    end
    for _ = 1, 10 do
      collectgarbage()
      async.sleep(0.002)
    end
    async.sleep(0.02)
    collectgarbage()
    assert.equal(200, #results)
    table.sort(results)
    for i = 1, 200 do assert.equal(i, results[i]) end
  end)

  helper.it("a task suspended forever stays alive until shutdown cancels it", function()
    local log = {}
    local t = async.spawn(function()
      local _ <close> = helper.closer(log, "closed")
      async.Future():await()
    end)
    local weak = setmetatable({ t }, { __mode = "v" })
    t = nil
    for _ = 1, 3 do
      collectgarbage()
      async.sleep(0.001)
    end
    assert.is_not_nil(weak[1])
    assert.is_false(weak[1]:done())
    assert.same({}, log)
    weak[1]:cancel()
    pcall(async.await, weak[1])
    assert.same({ "closed" }, log)
    local _ = t
  end)
end)

describe("current_task, now", function()
  helper.it("current_task is the running task inside each task", function()
    local main = async.current_task()
    assert.equal("main", main:name())
    local seen
    local t = async.spawn(function()
      seen = async.current_task()
      async.sleep(0)
      return async.current_task()
    end)
    local after = t:await()
    assert.equal(t, seen)
    assert.equal(t, after)
    assert.equal(main, async.current_task())
  end)

  it("current_task is nil outside tasks", function()
    assert.same({ n = 1 }, table.pack(async.current_task()))
  end)

  helper.it("now is a monotonic float in seconds that advances across a sleep", function()
    local t0 = async.now()
    assert.equal("float", math.type(t0))
    local prev = t0
    for _ = 1, 100 do
      local t = async.now()
      assert.is_true(t >= prev)
      prev = t
    end
    async.sleep(0.05)
    local dt = async.now() - t0
    assert.is_true(dt >= 0.045, "slept " .. dt)
    assert.is_true(dt < 2, "slept " .. dt)
  end)
end)

describe("sleep and yield", function()
  helper.it("sleep returns its extra arguments after the delay", function()
    local t0 = async.now()
    local r = table.pack(async.sleep(0.02, "a", nil, 3))
    assert.is_true(async.now() - t0 >= 0.015)
    assert.same({ n = 3, "a", nil, 3 }, r)
    assert.same({ n = 0 }, table.pack(async.sleep(0)))
    assert.same({ n = 1, "z" }, table.pack(async.sleep(0, "z")))
  end)

  local function fifo_with(pause)
    return function()
      local log = {}
      for _, name in ipairs({ "a", "b", "c" }) do
        async.spawn(function()
          for i = 1, 3 do
            log[#log + 1] = name .. i
            pause()
          end
        end)
      end
      pause()
      assert.same({ "a1", "b1", "c1" }, log)
      pause()
      assert.same({ "a1", "b1", "c1", "a2", "b2", "c2" }, log)
      pause()
      pause()
      assert.same({ "a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3" }, log)
    end
  end

  helper.it("yield lets every other ready task run once, in FIFO order", fifo_with(async.yield))
  helper.it("sleep(0) lets every other ready task run once, in FIFO order",
    fifo_with(function() async.sleep(0) end))

  helper.it("tasks spawned in a row start in spawn order", function()
    local log = {}
    local ts = {}
    for i = 1, 50 do
      ts[i] = async.spawn(function() log[#log + 1] = i end)
    end
    for i = 1, 50 do ts[i]:await() end
    for i = 1, 50 do assert.equal(i, log[i]) end
  end)

  helper.it("10,000 concurrent sleeps finish in deadline order #slow", function()
    local N = 10000
    local finished = {}
    local deadline, woke = {}, {}
    local tasks = {}
    for i = 1, N do
      -- 1 .. 200 ms, scattered (sleep(0) is a yield, not a timer, so it is left out)
      local d = (((i * 7919) % 200) + 1) / 1000
      tasks[i] = async.spawn(function()
        deadline[i] = async.now() + d
        async.sleep(d)
        woke[i] = async.now()
        finished[#finished + 1] = i
      end)
    end
    local r = async.gather(tasks)
    assert.equal(N, r.n)
    assert.equal(N, #finished)
    local prev, late = -math.huge, 0
    for k = 1, N do
      local i = finished[k]
      if deadline[i] < prev - 0.002 then late = late + 1 end
      -- a timer never fires early (1 ms slack for clock granularity)
      assert.is_true(woke[i] >= deadline[i] - 0.0015,
        string.format("task %d woke %.4f before its deadline", i, deadline[i] - woke[i]))
      -- completion order follows deadlines; the slack covers timer granularity and the
      -- process being preempted between our now() and the timer's own clock reading on a
      -- loaded machine (an unordered wake-up would be off by up to 200 ms)
      assert.is_true(deadline[i] >= prev - 0.02,
        string.format("task %d (deadline %.4f) finished after one with deadline %.4f",
          i, deadline[i], prev))
      if deadline[i] > prev then prev = deadline[i] end
    end
    -- preemption delays only the task it hits: inversions beyond timer granularity are rare
    assert.is_true(late <= N / 100, late .. " tasks finished out of deadline order")
  end)

  helper.it("a task spinning on sleep(0) still lets a 1 ms timer fire within a few ms", function()
    local stop, spins = false, 0
    local c0 = os.clock()
    local spinner = async.spawn(function()
      -- the CPU cap keeps a starving implementation from hanging the suite
      while not stop and os.clock() - c0 < 3 do
        async.sleep(0)
        spins = spins + 1
      end
      return stop
    end)
    async.yield() -- the spinner is running
    local t0 = async.now()
    async.sleep(0.001)
    local elapsed = async.now() - t0
    stop = true
    assert.is_true(spinner:await(), "the timer only fired after the spinner gave up")
    assert.is_true(spins > 0)
    assert.is_true(elapsed < 0.05 * helper.SLOWDOWN,
      string.format("1 ms timer fired after %.1f ms", elapsed * 1000))
  end)

  helper.it("a task spinning on yield() still lets a 1 ms timer fire within a few ms", function()
    local stop = false
    local c0 = os.clock()
    local spinner = async.spawn(function()
      while not stop and os.clock() - c0 < 3 do async.yield() end
      return stop
    end)
    async.yield()
    local t0 = async.now()
    async.sleep(0.001)
    local elapsed = async.now() - t0
    stop = true
    assert.is_true(spinner:await(), "the timer only fired after the spinner gave up")
    assert.is_true(elapsed < 0.05 * helper.SLOWDOWN,
      string.format("1 ms timer fired after %.1f ms", elapsed * 1000))
  end)
end)
