-- User coroutines inside tasks: plain generators, generators that await (async.wrap), and a
-- bare coroutine.yield in a task body.
local helper = require("spec.helper")
local async = helper.async

describe("user coroutines inside a task", function()
  helper.it("a coroutine.wrap generator that does not await works as usual", function()
    local gen = coroutine.wrap(function()
      for i = 1, 3 do coroutine.yield(i, i * 10) end
      return "end"
    end)
    async.sleep(0)
    assert.same({ n = 2, 1, 10 }, table.pack(gen()))
    async.sleep(0.001)
    assert.same({ n = 2, 2, 20 }, table.pack(gen()))
    assert.same({ n = 2, 3, 30 }, table.pack(gen()))
    assert.same({ n = 1, "end" }, table.pack(gen()))
    local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
    assert.same({ true, 2 }, { coroutine.resume(co, 1) })
    async.yield()
    assert.same({ true, 10 }, { coroutine.resume(co, 5) })
  end)

  helper.it("a plain coroutine.wrap generator that awaits works or fails clearly, never hangs", function()
    local gen = coroutine.wrap(function()
      async.sleep(0.001)
      coroutine.yield("first")
      async.sleep(0.001)
      coroutine.yield("second")
    end)
    local ok, v = pcall(async.timeout, 2, gen)
    if ok then
      -- a pass-through: the runtime's own suspension never leaks out as a value
      assert.equal("first", v)
      assert.equal("second", gen())
    else
      assert.is_false(async.is_timeout(v), "the generator hung")
      local msg = tostring(v)
      assert.not_equal("attempt to yield across a C-call boundary", (msg:gsub("^[^\n]-:%d+: ", "")))
      assert.is_truthy(msg:find("coroutine") or msg:find("wrap") or msg:find("task"), msg)
    end
    -- either way the task keeps working
    assert.equal("ok", async.sleep(0.001, "ok"))
  end)

  helper.it("async.wrap gives a generator whose awaits are forwarded to the scheduler", function()
    local ticks = 0
    local ticker = async.spawn(function()
      for _ = 1, 1000 do
        async.sleep(0.001)
        ticks = ticks + 1
      end
    end)
    local gen = async.wrap(function(start)
      local x = start
      while x < start + 3 do
        async.sleep(0.01)
        local f = async.Future()
        async.spawn(function() f:set_result(x) end)
        coroutine.yield(f:await(), "v")
        x = x + 1
      end
      return "done"
    end)
    local got = {}
    local before = ticks
    for _ = 1, 3 do
      got[#got + 1] = table.pack(gen(5))
    end
    assert.same({ { n = 2, 5, "v" }, { n = 2, 6, "v" }, { n = 2, 7, "v" } }, got)
    assert.equal("done", gen())
    assert.is_true(ticks > before, "other tasks did not run while the generator slept")
    ticker:cancel()
    pcall(ticker.await, ticker)
  end)

  helper.it("async.wrap passes values into the generator and raises its errors", function()
    local gen = async.wrap(function(a)
      local b = coroutine.yield(a + 1)
      async.yield()
      local c = coroutine.yield(b + 1)
      error({ got = c })
    end)
    assert.equal(2, gen(1))
    assert.equal(11, gen(10))
    local ok, err = pcall(gen, "last")
    assert.is_false(ok)
    assert.same({ got = "last" }, err)
  end)

  helper.it("a bare coroutine.yield in a task body fails the task with a clear error", function()
    local t = async.spawn(function()
      coroutine.yield("stray")
      return "should not continue silently"
    end)
    local ok, err = pcall(async.timeout, 2, t.await, t)
    assert.is_false(ok)
    assert.is_false(async.is_timeout(err), "the task hung")
    local msg = tostring(err)
    assert.is_truthy(msg:find("yield"), msg)
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    -- the runtime is fine afterwards
    assert.equal(4, async.spawn(function() async.sleep(0) return 4 end):await())
  end)
end)
