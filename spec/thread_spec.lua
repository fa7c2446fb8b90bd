-- async.to_thread: fn(...) on libuv's thread pool, in a separate Lua state.
local helper = require("spec.helper")
local async = helper.async

local to_thread = async.to_thread

local function echo(...) return select("#", ...), ... end

-- a CPU-bound function: about `n` loop iterations
local function spin(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

-- iterations that take about `secs` on this machine, measured on a worker
local spin_rate
local function iterations(secs)
  if not spin_rate then
    local n = 2000000
    local t0 = async.now()
    to_thread(spin, n)
    spin_rate = n / math.max(async.now() - t0, 1e-3)
  end
  return math.floor(spin_rate * secs)
end

-- A call that keeps its thread until the file `path` exists (at most a minute), sleeping in a
-- system call meanwhile (no CPU: valgrind's scheduler lets a spinning thread starve others).
local function gate(path)
  for _ = 1, 6000 do
    local f = io.open(path)
    if f then
      f:close()
      return "released"
    end
    local p = assert(io.popen("sleep 0.01"))
    p:read("a")
    p:close()
  end
  return "gave up"
end

-- A gate path, and a to-be-closed value that opens the gate (also when the test fails: a call
-- still running would keep the process from exiting).
-- Gate files are not helper.script's (those are removed after each test, maybe before an
-- abandoned gate call saw its file): they are removed when the spec file ends.
local gates = {}
local function new_gate()
  local path = helper.tmpfile()
  gates[#gates + 1] = path
  return path, setmetatable({}, { __close = function()
    local f = assert(io.open(path, "w"))
    f:close()
  end })
end

local function expect_error(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  assert.is_string(err)
  assert.is_truthy(err:find(pattern, 1, true), err)
  return err
end

describe("async.to_thread", function()
  after_each(helper.cleanup)  -- scripts
  teardown(function()
    os.execute("sleep 1")  -- abandoned gate calls see their open gate and end meanwhile
    for _, path in ipairs(gates) do os.remove(path) end
  end)

  describe("copies arguments and results", function()
    helper.it("of every allowed type, keeping integers and floats apart", function()
      local long = string.rep("x", 1000000) .. "\0\255"
      local args = table.pack(nil, true, false, 0, -3, math.maxinteger, math.mininteger, 1.5,
        -0.0, 1 / 0, -1 / 0, 2.0 ^ 53, 3.0, "", "bytes\0with\255", long, nil)
      local r = table.pack(to_thread(echo, table.unpack(args, 1, args.n)))
      assert.equal(args.n + 1, r.n)
      assert.equal(args.n, r[1])
      for i = 1, args.n do
        assert.equal(math.type(args[i]), math.type(r[i + 1]), "argument " .. i)
        assert.equal(args[i], r[i + 1], "argument " .. i)
      end
      assert.equal(-1 / 0, 1 / r[10])  -- -0.0 stays negative
      local nan = to_thread(function(x) return x end, 0 / 0)
      assert.is_true(nan ~= nan)
      assert.equal(0, to_thread(function() end) and 1 or 0)  -- no results: nothing returned
      assert.equal(0, select("#", to_thread(function() end)))
    end)

    helper.it("nested tables, with keys of every allowed type; the copy is independent", function()
      local t = {
        1, 2, { 3, { 4 } }, nil, 5,
        name = "x", [1.5] = "float key", [true] = "yes", [false] = "no", [-7] = "neg",
        deep = { a = { b = { c = { d = "e" } } } },
        empty = {},
      }
      local r, seen = to_thread(function(x)
        x.deep.a.b.c.d = "changed on the thread"
        return x, x.deep.a.b.c.d
      end, t)
      assert.equal("changed on the thread", seen)
      assert.equal("e", t.deep.a.b.c.d)  -- the caller's table is untouched
      assert.equal("changed on the thread", r.deep.a.b.c.d)  -- the result is the thread's
      r.deep.a.b.c.d = "e"
      assert.same(t, r)
      assert.are_not.equal(t, r)
      assert.equal(5, r[5])
      assert.is_nil(r[4])
      assert.equal("float key", r[1.5])
      assert.equal("integer", math.type(r[3][2][1]))
    end)

    helper.it("a table reached twice is one table in the copy, also in a cycle", function()
      local shared = { "s" }
      local t = { a = shared, b = shared, list = { shared, shared } }
      t.self = t
      local r = to_thread(function(x)
        assert(x.self == x and x.a == x.b and x.list[1] == x.a, "not shared on the thread")
        return x
      end, t)
      assert.equal(r, r.self)
      assert.equal(r.a, r.b)
      assert.equal(r.a, r.list[2])
      assert.equal("s", r.a[1])
    end)

    helper.it("metatables are not copied", function()
      local obj = setmetatable({ v = 1 }, { __index = function() return "meta" end })
      local r, had = to_thread(function(x) return x, getmetatable(x) ~= nil, x.other end, obj)
      assert.is_false(had)
      assert.is_nil(getmetatable(r))
      assert.is_nil(r.other)
      assert.equal(1, r.v)
    end)
  end)

  describe("refuses what cannot be copied, naming it", function()
    helper.it("a function with an upvalue other than _ENV", function()
      local factor = 3
      local err = expect_error("upvalue 'factor'", to_thread, function(x) return x * factor end, 2)
      assert.is_truthy(err:find("bad argument #1 to 'to_thread'", 1, true), err)
      -- globals are fine: they are the thread's own globals
      assert.equal(4, to_thread(function(x) return math.floor(x) end, 4.5))
      -- also in a function loaded from stripped bytecode (its _ENV has no name)
      assert.equal(1, to_thread(load(string.dump(function(x) return math.abs(x) end, true)), -1))
    end)

    helper.it("a C function, or something that is not a function", function()
      expect_error("C function", to_thread, print)
      expect_error("function expected, got number", to_thread, 42)
      expect_error("function expected, got no value", to_thread)
    end)

    helper.it("bad arguments, with their number and where they are", function()
      expect_error("bad argument #2 to 'to_thread' (a function cannot be copied", to_thread,
        echo, print)
      expect_error("bad argument #3 to 'to_thread' (a userdata at .out[2] cannot be copied",
        to_thread, echo, 1, { out = { 1, io.stdout } })
      expect_error("a coroutine at [\"a key\"]", to_thread, echo,
        { ["a key"] = coroutine.create(print) })
      expect_error("a function used as a table key in the table at .t", to_thread, echo,
        { t = { [print] = 1 } })
      local light = debug.upvalueid(echo, 1) or debug.upvalueid(function() return echo end, 1)
      expect_error("a userdata used as a table key in the table at .a", to_thread, echo,
        { a = { [light] = 1 } })
      local deep = {}
      local cur = deep
      for _ = 1, 150 do
        cur.next = {}
        cur = cur.next
      end
      expect_error("nested deeper than 100 levels", to_thread, echo, deep)
    end)

    helper.it("bad results raise in the calling task, after the call", function()
      local err = expect_error("to_thread: result #2: a function at .f cannot be copied back",
        to_thread, function() return 1, { f = print } end)
      assert.is_truthy(err:find("only nil, booleans, numbers, strings and tables", 1, true))
      expect_error("result #1: a userdata", to_thread, function() return io.stdout end)
    end)
  end)

  describe("errors raised by fn", function()
    helper.it("a message is re-raised unchanged in the calling task", function()
      local ok, err = pcall(to_thread, function(x) error("bad input: " .. x) end, "y")
      assert.is_false(ok)
      assert.matches("^to_thread:%d+: bad input: y$", err:gsub("^.-thread_spec%.lua", "to_thread"))
      local ok2, err2 = pcall(to_thread, function() local t = nil; return t.x end)
      assert.is_false(ok2)
      assert.matches("attempt to index a nil value", err2)
    end)

    helper.it("a table of plain values is copied; an error object becomes its tostring", function()
      local ok, err = pcall(to_thread, function() error({ code = 7, where = { "a" } }) end)
      assert.is_false(ok)
      assert.same({ code = 7, where = { "a" } }, err)
      local ok2, err2 = pcall(to_thread, function() error(setmetatable({}, {
        __tostring = function() return "custom error" end })) end)
      assert.is_false(ok2)
      assert.equal("custom error", err2)  -- its methods cannot cross: its tostring does
      local ok3, err3 = pcall(to_thread, function() error(io.stderr) end)
      assert.is_false(ok3)
      assert.matches("error value that cannot be copied %(a userdata", err3)
    end)

    helper.it("the worker state stays usable after an error", function()
      for _ = 1, 5 do pcall(to_thread, function() error("x") end) end
      assert.equal(3, to_thread(function(a, b) return a + b end, 1, 2))
    end)
  end)

  describe("concurrency", function()
    helper.it("the loop keeps running during a CPU-bound call", function()
      local n = iterations(0.3)
      local ticks = 0
      local ticker = async.spawn(function()
        while true do
          async.sleep(0.01)
          ticks = ticks + 1
        end
      end)
      local t0 = async.now()
      to_thread(spin, n)
      local took = async.now() - t0
      ticker:cancel()
      pcall(ticker.await, ticker)
      -- the ticker ran throughout (loosely: at least a third of the ticks it could do); not
      -- under valgrind, which runs one thread at a time and lets a spinning one hog the CPU
      if helper.SLOWDOWN == 1 then
        assert.is_true(ticks >= took / 0.01 / 3, ("%d ticks in %.3f s"):format(ticks, took))
        assert.is_true(ticks >= 5, ticks .. " ticks")
      end
    end)

    helper.it("two CPU-bound calls run at the same time, on two threads #slow", function()
      -- a rendezvous, not a stopwatch (the machine is shared): each call announces itself
      -- with a file, then spins (on the CPU) until it sees the other's; run one after the
      -- other, the first would give up after 20 s
      local function meet(mine, other)
        local f = assert(io.open(mine, "w"))
        f:close()
        local t0 = os.time()
        while os.time() - t0 < 20 do
          f = io.open(other)
          if f then
            f:close()
            return "met"
          end
          for _ = 1, 10000 do end  -- busy
        end
        return "alone"
      end
      local a, b = os.tmpname(), os.tmpname()
      os.remove(a)
      os.remove(b)
      local _ <close> = setmetatable({}, { __close = function() os.remove(a); os.remove(b) end })
      assert.same({ "met", "met" }, { async.gather(function() return to_thread(meet, a, b) end,
                                                   function() return to_thread(meet, b, a) end) })
    end)

    helper.it("1000 calls, 100 in flight at a time, each gets its own results", function()
      local items = {}
      for i = 1, 1000 do items[i] = i end
      local r = async.map(function(i)
        local a, b = to_thread(function(x) return x * x, { x = x } end, i)
        return a == i * i and b.x == i and i or -i
      end, items, { concurrency = 100 })
      for i = 1, 1000 do assert.equal(i, r[i]) end
    end)

    helper.it("worker states are reused: sequential calls share one, never more than threads",
      function()
        local function state_id()
          if not STATE_ID then  -- luacheck: ignore (a global of the worker state)
            STATE_ID = tostring({})  -- luacheck: ignore
            CALLS = 0  -- luacheck: ignore
          end
          CALLS = CALLS + 1  -- luacheck: ignore
          return STATE_ID, CALLS  -- luacheck: ignore
        end
        local ids, most = {}, 0
        for _ = 1, 20 do
          local id, calls = to_thread(state_id)
          ids[id] = true
          most = math.max(most, calls)
        end
        local n = 0
        for _ in pairs(ids) do n = n + 1 end
        assert.equal(1, n)
        assert.is_true(most >= 20)
        local list = {}
        for i = 1, 64 do list[i] = i end
        local seen = async.map(function() return (to_thread(state_id)) end, list)
        local distinct = {}
        for i = 1, 64 do distinct[seen[i]] = true end
        n = 0
        for _ in pairs(distinct) do n = n + 1 end
        local size = tonumber(os.getenv("UV_THREADPOOL_SIZE") or "") or 4
        assert.is_true(n <= size, n .. " states for " .. size .. " threads")
      end)

    helper.it("require inside fn uses the caller's package.path", function()
      local dir = helper.script("") .. ".d"
      assert(os.execute("mkdir -p " .. helper.q(dir)))
      local f = assert(io.open(dir .. "/thread_spec_mod.lua", "w"))
      f:write("return { answer = 42 }\n")
      f:close()
      local saved = package.path
      package.path = dir .. "/?.lua;" .. saved
      local ok, v = pcall(to_thread, function() return require("thread_spec_mod").answer end)
      package.path = saved
      os.remove(dir .. "/thread_spec_mod.lua")
      os.remove(dir)
      assert.is_true(ok, tostring(v))
      assert.equal(42, v)
    end)
  end)

  describe("cancellation", function()
    helper.it("a cancelled call raises Cancelled at once; the loop is not blocked", function()
      do
        local path, opener = new_gate()
        local _ <close> = opener
        local t = async.spawn(function() return to_thread(gate, path) end)
        async.sleep(0.02)
        t:cancel()
        helper.expect_cancelled(t)  -- while the call still runs on its thread
      end  -- opens the gate: the abandoned call ends on its own
      assert.equal(3, to_thread(function() return 3 end))  -- the pool still works
    end)

    helper.it("a task that is already cancelled does not start fn", function()
      local path = helper.script("")
      os.remove(path)
      local function write(p)
        local f = io.open(p, "a")
        f:write("ran\n")
        f:close()
      end
      for _ = 1, 20 do  -- a free pool thread could take the job before it is withdrawn
        local t = async.spawn(function()
          pcall(async.sleep, 10)  -- swallows the cancellation: it is sticky
          return pcall(to_thread, write, path)
        end)
        async.sleep(0.001)
        t:cancel()
        pcall(t.await, t)
      end
      async.sleep(0.1)  -- a job a pool thread took would have written by now
      local f = io.open(path)
      local ran = f and f:read("a") or ""
      if f then f:close(); os.remove(path) end
      assert.equal("", ran, "fn ran in a cancelled task")
    end)

    helper.it("a timeout around a call expires on time", function()
      local path, opener = new_gate()
      local _ <close> = opener
      local t0 = async.now()
      helper.expect_timeout(0.05, to_thread, gate, path)
      assert.is_true(async.now() - t0 < 0.5 * helper.SLOWDOWN)
    end)

    helper.it("a call still queued behind busy threads is dropped", function()
      local size = tonumber(os.getenv("UV_THREADPOOL_SIZE") or "") or 4
      local busy, ran = {}, false
      do
        local path, opener = new_gate()
        local _ <close> = opener
        for i = 1, size do busy[i] = async.spawn(to_thread, gate, path) end
        local queued = async.spawn(function()
          to_thread(function() return 1 end)
          ran = true
        end)
        async.sleep(0.01)
        queued:cancel()
        helper.expect_cancelled(queued)
      end
      async.gather(busy)
      assert.is_false(ran)
    end)

    helper.it("a result that arrived just before the cancellation is discarded", function()
      -- Each task cancels the other once its own call returns. Both calls finish on their
      -- threads while the main task keeps the loop busy, so both results arrive in one poll:
      -- the task that resumes second was cancelled after its result arrived.
      local dir = helper.script("") .. ".d"
      assert(os.execute("mkdir -p " .. helper.q(dir)))
      local a, b
      local function call(name)
        return function()
          local r = to_thread(function(path)
            local f = assert(io.open(path, "w"))
            f:close()
            return "done"
          end, dir .. "/" .. name)
          local other = name == "a" and b or a
          other:cancel()
          return r
        end
      end
      a = async.spawn(call("a"))
      b = async.spawn(call("b"))
      async.yield()
      local deadline = os.time() + 10
      repeat  -- busy, without yielding: the loop does not poll
        local fa, fb = io.open(dir .. "/a"), io.open(dir .. "/b")
        if fa then fa:close() end
        if fb then fb:close() end
      until (fa and fb) or os.time() > deadline
      local oka, ra = pcall(a.await, a)
      local okb, rb = pcall(b.await, b)
      os.remove(dir .. "/a")
      os.remove(dir .. "/b")
      os.remove(dir)
      assert.is_true(oka ~= okb, "exactly one finished")
      if oka then
        assert.equal("done", ra)
        assert.is_true(async.is_cancelled(rb))
      else
        assert.equal("done", rb)
        assert.is_true(async.is_cancelled(ra))
      end
    end)
  end)

  helper.it("a timer due while a call is in flight still wakes its task", function()
    -- Regression: a task that runs a while without yielding leaves libuv's cached time behind,
    -- so the next wake-up timer was already due when the loop started polling; libuv ran it
    -- first and then polled without a timeout, waiting for the call forever.
    local path, opener = new_gate()
    local _ <close> = opener
    local a = async.spawn(function()
      async.sleep(0.05)
      local f = assert(io.open(path, "w"))  -- opens the gate the other task's call waits on
      f:close()
      return "timer fired"
    end)
    local b = async.spawn(function()
      local stop = os.clock() + 0.04
      while os.clock() < stop do end  -- busy, without yielding
      return to_thread(gate, path)
    end)
    assert.equal("timer fired", helper.finish(a, 5))
    assert.equal("released", helper.finish(b, 5))
  end)

  it("must be called from a task", function()
    local ok, err = pcall(to_thread, function() end)
    assert.is_false(ok)
    assert.matches("to_thread must be called from a task", err)
  end)

  it("works on a host's loop; a call abandoned there ends after the Lua state closed", function()
    -- examples/embed/host.c drives lasync with lasync_step, closes the Lua state when no task
    -- is left, then runs its loop until the abandoned call's thread is done
    local script = helper.script([[
local async = require('lasync')
print(async.to_thread(function(a, b) return a + b end, 2, 3))
local slow = async.spawn(async.to_thread, function()
  local p = io.popen("sleep 0.2")
  p:read("a")
  p:close()
end)
async.sleep(0.01)
slow:cancel()
print(pcall(slow.await, slow))
]])
    local r = helper.sh("cd " .. helper.q(helper.ROOT) .. " && timeout 30 "
      .. helper.q(helper.ROOT .. "/build/embed-host") .. " " .. helper.q(script))
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    assert.matches("^5\nfalse\tcancelled: task '[^']+' was cancelled\n$", r.stdout)
  end)

  it("a script that ends while a call runs exits cleanly after the call", function()
    local r = helper.lasync(helper.q(helper.script([[
local async = require("lasync")
async.spawn(async.to_thread, function()
  local s = 0
  for i = 1, 2e7 do s = s + i end
  return s
end)
async.sleep(0.01)
print("main done")
]])))
    assert.equal("main done\n", r.stdout)
    assert.equal("", r.stderr)
    assert.equal(0, r.code)
  end)
end)
