-- Task objects: await, results and errors, state queries, names, on_done, tracebacks.
local helper = require("spec.helper")
local async = helper.async

local SRC = debug.getinfo(1, "S").short_src

describe("Task:await", function()
  helper.it("returns all of the task's results, nils included", function()
    local t = async.spawn(function(x)
      async.sleep(0.001)
      return x, nil, "c", nil
    end, "a")
    assert.same({ n = 4, "a", nil, "c", nil }, table.pack(t:await()))
    -- awaiting a finished task again gives the same results
    assert.same({ n = 4, "a", nil, "c", nil }, table.pack(t:await()))
    assert.same({ n = 4, "a", nil, "c", nil }, table.pack(async.await(t)))
  end)

  helper.it("returns the results of a task that finished without ever suspending", function()
    local t = async.spawn(function() return 1, 2 end)
    async.yield()
    assert.is_true(t:done())
    assert.same({ n = 2, 1, 2 }, table.pack(t:await()))
    local u = async.spawn(function() return "x" end)
    assert.equal("x", u:await()) -- awaited before it started
  end)

  helper.it("lets many tasks await the same task", function()
    local f = async.Future()
    local t = async.spawn(function() return f:await() * 2, "two" end)
    local awaiters = {}
    for i = 1, 20 do
      awaiters[i] = async.spawn(function()
        local a, b = t:await()
        return a + i, b
      end)
    end
    async.sleep(0.01)
    for i = 1, 20 do assert.is_false(awaiters[i]:done()) end
    f:set_result(50)
    for i = 1, 20 do
      assert.same({ n = 2, 100 + i, "two" }, table.pack(awaiters[i]:await()))
    end
    assert.same({ n = 2, 100, "two" }, table.pack(t:await()))
  end)

  helper.it("re-raises the task's error value unchanged", function()
    local e = { why = "table error" }
    local t1 = async.spawn(function() async.sleep(0) error(e) end)
    local ok, err = pcall(t1.await, t1)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    -- a second await raises the same value again
    ok, err = pcall(async.await, t1)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))

    local t2 = async.spawn(function() error("exact", 0) end)
    ok, err = pcall(t2.await, t2)
    assert.is_false(ok)
    assert.equal("exact", err)

    local line
    local t3 = async.spawn(function()
      line = debug.getinfo(1, "l").currentline; error("with position")
    end)
    ok, err = pcall(t3.await, t3)
    assert.is_false(ok)
    assert.equal(SRC .. ":" .. line .. ": with position", err)
  end)

  helper.it("carries errors across 3 levels of tasks unchanged, each task with its traceback", function()
    local c_line, c_spawn, b_spawn, a_spawn, b_await, a_await
    local c, b
    -- (each spawn site is recorded on the line where its `async.spawn(` call starts)
    local a; a_spawn = helper.here(); a = async.spawn(function()
      b_spawn = helper.here(); b = async.spawn(function()
        c_spawn = helper.here(); c = async.spawn(function()
          async.sleep(0.001)
          c_line = debug.getinfo(1, "l").currentline; error("deep failure")
        end)
        b_await = helper.here(); return (c:await()) -- not a tail call: keep this frame
      end)
      a_await = helper.here(); return (b:await())
    end)
    local ok, err = pcall(a.await, a)
    local expected = SRC .. ":" .. c_line .. ": deep failure"
    assert.is_false(ok)
    assert.equal(expected, err)
    for _, t in ipairs({ a, b, c }) do
      assert.is_true(t:done())
      assert.is_false(t:cancelled())
      assert.equal(expected, t:error())
      assert.is_string(t:traceback())
      assert.is_truthy(t:traceback():find("deep failure", 1, true))
    end
    -- each traceback names where its task was spawned and where it failed
    local tc, tb, ta = c:traceback(), b:traceback(), a:traceback()
    assert.is_true(helper.has_loc(tc, c_spawn), tc)
    assert.is_true(helper.has_loc(tc, SRC .. ":" .. c_line), tc)
    assert.is_true(helper.has_loc(tb, b_spawn), tb)
    assert.is_true(helper.has_loc(tb, b_await), tb)
    assert.is_true(helper.has_loc(ta, a_spawn), ta)
    assert.is_true(helper.has_loc(ta, a_await), ta)
  end)
end)

describe("a failing task", function()
  helper.it("closes every <close> variable, innermost first, with the error", function()
    local e = { "failure" }
    local log, seen = {}, {}
    local function closer(label)
      return setmetatable({}, { __close = function(_, err)
        log[#log + 1] = label
        seen[#seen + 1] = rawequal(err, e)
      end })
    end
    local t = async.spawn(function()
      local _ <close> = closer("body")
      local function inner()
        local _ <close> = closer("inner")
        async.sleep(0.001)
        error(e)
      end
      inner()
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.same({ "inner", "body" }, log)
    assert.same({ true, true }, seen)
    assert.is_false(t:cancelled())
  end)

  helper.it("may await inside __close while it unwinds; the error still arrives unchanged", function()
    local log = {}
    local t = async.spawn(function()
      local _ <close> = setmetatable({}, { __close = function()
        async.sleep(0.01)
        log[#log + 1] = "cleaned after an await"
      end })
      error("exact", 0)
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.equal("exact", err)
    assert.same({ "cleaned after an await" }, log)
  end)

  helper.it("has a traceback naming its spawn site even when the error is not a string", function()
    local t; local spawned = helper.here(); t = async.spawn(function() async.sleep(0) error({}) end)
    pcall(t.await, t)
    assert.is_string(t:traceback())
    assert.is_true(helper.has_loc(t:traceback(), spawned), t:traceback())
  end)
end)

describe("Task state", function()
  helper.it("done / cancelled / result / error for a task that succeeds", function()
    local t = async.spawn(function() async.sleep(0.01) return "r1", "r2" end)
    assert.is_false(t:done())
    assert.is_false(t:cancelled())
    assert.is_nil(t:error())
    local ok, err = pcall(t.result, t) -- not done yet
    assert.is_false(ok)
    assert.equal("table", type(err))
    assert.equal("invalid", err.kind)
    t:await()
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    assert.same({ n = 2, "r1", "r2" }, table.pack(t:result()))
    assert.is_nil(t:error())
    assert.is_nil(t:traceback())
    assert.is_false(t:cancel())
    assert.is_false(t:cancelled())
  end)

  helper.it("done / cancelled / result / error for a task that fails", function()
    local e = { "failure" }
    local t = async.spawn(function() error(e) end)
    pcall(t.await, t)
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    assert.is_true(rawequal(e, t:error()))
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    assert.is_false(t:cancel())
  end)

  helper.it("done / cancelled / result / error for a cancelled task", function()
    local t = async.spawn(function() async.sleep(10) end)
    async.yield()
    assert.is_true(t:cancel("go away"))
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_true(t:done())
    assert.is_true(t:cancelled())
    assert.is_true(async.is_cancelled(t:error()))
    assert.is_truthy(t:error().message:find("go away", 1, true))
    ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    assert.is_false(t:cancel())
  end)

  helper.it("name and set_name", function()
    local t = async.spawn(function() async.sleep(0) end)
    t:set_name("worker")
    assert.equal("worker", t:name())
    async.current_task():set_name("boss")
    assert.equal("boss", async.current_task():name())
    t:await()
    assert.equal("worker", t:name())
  end)
end)

describe("Task:on_done", function()
  helper.it("calls fn(task) once when the task finishes, in every outcome", function()
    local calls = {}
    local function record(label)
      return function(task) calls[#calls + 1] = { label, task } end
    end
    local ok_t = async.spawn(function() async.sleep(0.001) return 1 end)
    local bad_t = async.spawn(function() async.sleep(0.001) error("x") end)
    local cancel_t = async.spawn(function() async.sleep(10) end)
    ok_t:on_done(record("ok"))
    bad_t:on_done(record("bad"))
    cancel_t:on_done(record("cancelled"))
    assert.same({}, calls)
    async.yield()
    cancel_t:cancel()
    ok_t:await()
    pcall(bad_t.await, bad_t)
    pcall(cancel_t.await, cancel_t)
    async.sleep(0.01)
    assert.equal(3, #calls)
    local by = {}
    for _, c in ipairs(calls) do by[c[1]] = c[2] end
    assert.equal(ok_t, by.ok)
    assert.equal(bad_t, by.bad)
    assert.equal(cancel_t, by.cancelled)
  end)

  helper.it("runs the callback for a task that is already done", function()
    local t = async.spawn(function() return 1 end)
    t:await()
    local n, got = 0, nil
    t:on_done(function(task) n = n + 1; got = task end)
    async.sleep(0.01)
    assert.equal(1, n)
    assert.equal(t, got)
  end)
end)

describe("Task:traceback", function()
  helper.it("names the error, the failing line and where the task was spawned", function()
    local fail_line
    local function inner()
      async.sleep(0)
      fail_line = debug.getinfo(1, "l").currentline; error("tb check")
    end
    local t = async.spawn(inner); local spawned = helper.here()
    assert.is_nil(t:traceback()) -- not failed (not even started)
    pcall(t.await, t)
    local tb = t:traceback()
    assert.is_string(tb)
    assert.is_truthy(tb:find("tb check", 1, true), tb)
    assert.is_true(helper.has_loc(tb, SRC .. ":" .. fail_line), tb)
    assert.is_truthy(tb:lower():find("spawned", 1, true), tb)
    assert.is_true(helper.has_loc(tb, spawned), tb)
  end)

  helper.it("is nil for a task that succeeded", function()
    local t = async.spawn(function() return true end)
    t:await()
    assert.is_nil(t:traceback())
  end)
end)
