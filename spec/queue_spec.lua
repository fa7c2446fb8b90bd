-- Queues: Queue, LifoQueue, PriorityQueue. FIFO hand-off, bounded put, nowait errors, close
-- semantics with several consumers, join/task_done, deadlines, and cancellation of getters and
-- putters at every point (also after an item or slot was handed over, before the task resumed).
local helper = require("spec.helper")
local async = helper.async

local settle, started, finish = helper.settle, helper.started, helper.finish
local expect_cancelled, expect_timeout = helper.expect_cancelled, helper.expect_timeout
local expect_kind, expect_plain_error = helper.expect_kind, helper.expect_plain_error
local completes_without_suspending = helper.completes_without_suspending

-- takes everything left with get_nowait
local function drain(q)
  local out = {}
  while not q:empty() do out[#out + 1] = q:get_nowait() end
  return out
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- {====== Queue ======}

describe("async.Queue", function()
  helper.it("puts and gets in FIFO order; size, empty, full and maxsize", function()
    local q = async.Queue(3)
    assert.equal(3, q:maxsize())
    assert.is_true(q:empty())
    assert.is_false(q:full())
    assert.equal(0, q:size())
    q:put("a")
    q:put("b")
    assert.equal(2, q:size())
    assert.is_false(q:empty())
    assert.is_false(q:full())
    q:put("c")
    assert.is_true(q:full())
    assert.equal(3, q:size())
    assert.equal("a", q:get())
    assert.is_false(q:full())
    assert.equal("b", q:get())
    assert.equal("c", q:get())
    assert.is_true(q:empty())
    assert.equal(0, q:size())
  end)

  helper.it("is unbounded with no maxsize or maxsize 0, and never full", function()
    for _, q in ipairs({ async.Queue(), async.Queue(0) }) do
      for i = 1, 1000 do q:put(i) end
      assert.equal(1000, q:size())
      assert.is_false(q:full())
      q:put_nowait(1001)
      assert.same(range(1001), drain(q))
    end
  end)

  helper.it("carries false and other values unchanged", function()
    local q = async.Queue()
    local t = {}
    q:put(false)
    q:put(0)
    q:put(t)
    assert.is_false(q:get())
    assert.equal(0, q:get())
    assert.is_true(rawequal(t, q:get()))
  end)

  helper.it("an uncontended put or get does not suspend", function()
    local q = async.Queue(1)
    completes_without_suspending(q.put, q, "x")
    assert.equal("x", completes_without_suspending(q.get, q))
  end)

  helper.it("get suspends while empty; a put wakes it", function()
    local q = async.Queue()
    local t = started(function() return q:get() end)
    settle()
    assert.is_false(t:done())
    q:put("x")
    assert.equal("x", finish(t))
    assert.is_true(q:empty())
  end)

  helper.it("put suspends while full; a get makes room", function()
    local q = async.Queue(1)
    q:put("a")
    local t = started(function() q:put("b") return "put done" end)
    settle()
    assert.is_false(t:done())
    assert.equal(1, q:size())
    assert.equal("a", q:get())
    assert.equal("put done", finish(t))
    assert.equal("b", q:get())
    assert.is_true(q:empty())
  end)

  helper.it("getters get items in the order they started waiting", function()
    local q = async.Queue()
    local tasks = {}
    for i = 1, 5 do tasks[i] = async.spawn(function() return q:get() end) end
    settle()
    for i = 1, 5 do q:put("item" .. i) end
    for i = 1, 5 do assert.equal("item" .. i, finish(tasks[i])) end
    assert.is_true(q:empty())
  end)

  helper.it("putters put in the order they started waiting", function()
    local q = async.Queue(1)
    q:put(0)
    local tasks = {}
    for i = 1, 5 do tasks[i] = async.spawn(function() q:put(i) end) end
    settle()
    local got = {}
    for _ = 0, 5 do got[#got + 1] = q:get() end
    for i = 1, 5 do finish(tasks[i]) end
    assert.same({ 0, 1, 2, 3, 4, 5 }, got)
    assert.is_true(q:empty())
  end)

  helper.it("put_nowait on a full queue raises kind full; get_nowait on an empty one kind empty", function()
    local q = async.Queue(1)
    expect_kind("empty", q.get_nowait, q)
    q:put_nowait("a")
    expect_kind("full", q.put_nowait, q, "b")
    assert.equal(1, q:size())
    assert.equal("a", q:get_nowait())
    expect_kind("empty", q.get_nowait, q)
    assert.is_true(q:empty())
  end)

  helper.it("put_nowait hands to a waiting getter; get_nowait lets a waiting putter in", function()
    local q = async.Queue(1)
    local g = started(function() return q:get() end)
    q:put_nowait("direct")
    assert.equal("direct", finish(g))
    q:put("a")
    local p = started(function() q:put("b") return "put" end)
    assert.equal("a", q:get_nowait())
    assert.equal("put", finish(p))
    assert.equal("b", q:get_nowait())
  end)

  helper.it("misuse raises clear argument errors", function()
    expect_plain_error({ "queue", "maxsize", "argument" }, async.Queue, "x")
    expect_plain_error({ "queue", "maxsize", "argument" }, async.Queue, -1)
    local q = async.Queue()
    expect_plain_error({ "put", "nil", "argument" }, q.put, q, nil)
    expect_plain_error({ "put", "nil", "argument" }, q.put_nowait, q, nil)
    assert.is_true(q:empty())
  end)

  describe("close", function()
    helper.it("makes put and put_nowait raise kind closed; get drains, then returns nil", function()
      local q = async.Queue(5)
      q:put(1)
      q:put(2)
      q:close()
      expect_kind("closed", q.put, q, 3)
      expect_kind("closed", q.put_nowait, q, 3)
      assert.equal(2, q:size())
      assert.equal(1, q:get())
      assert.equal(2, q:get_nowait())
      assert.is_nil(q:get())
      assert.is_nil(q:get())
      expect_kind("empty", q.get_nowait, q)
    end)

    helper.it("wakes every waiting getter with nil", function()
      local q = async.Queue()
      local tasks = {}
      for i = 1, 4 do
        tasks[i] = async.spawn(function()
          local v = q:get()
          return v == nil and "nil" or v
        end)
      end
      settle()
      q:close()
      for i = 1, 4 do assert.equal("nil", finish(tasks[i])) end
    end)

    helper.it("makes waiting putters raise kind closed without adding their items", function()
      local q = async.Queue(1)
      q:put("a")
      local tasks = {}
      for i = 1, 3 do
        tasks[i] = async.spawn(function()
          local ok, err = pcall(q.put, q, "p" .. i)
          return ok, type(err) == "table" and err.kind
        end)
      end
      settle()
      q:close()
      for i = 1, 3 do assert.same({ n = 2, false, "closed" }, table.pack(finish(tasks[i]))) end
      assert.equal("a", q:get())
      assert.is_nil(q:get())
    end)

    helper.it("ends a for ... in q:iter() loop after the last item", function()
      local q = async.Queue()
      for i = 1, 5 do q:put(i) end
      q:put(false)
      q:close()
      local got = {}
      for v in q:iter() do got[#got + 1] = v end
      assert.same({ 1, 2, 3, 4, 5, false }, got)
    end)

    helper.it("a putter given a slot, not yet resumed at close: no item appears after get saw nil", function()
      local q = async.Queue(1)
      q:put("a")
      local p = started(function()
        local ok, err = pcall(q.put, q, "b")
        return ok, type(err) == "table" and err.kind or err
      end)
      assert.equal("a", q:get()) -- gives the slot to p, which has not resumed yet
      q:close()
      local drained = {}
      for v in q:iter() do drained[#drained + 1] = v end -- the consumer drains what is left
      local ok, kind = finish(p)
      settle()
      if ok then
        -- the put succeeded: its item was left, so the drain had to return it before nil
        assert.same({ "b" }, drained)
      else
        assert.equal("closed", kind)
        assert.same({}, drained)
      end
      assert.equal(0, q:size()) -- nothing appears after get returned nil
      assert.is_nil(q:get())
    end)

    helper.it("with several consumers delivers each item exactly once and ends every consumer", function()
      local q = async.Queue(4)
      local N = 300
      local got, ended = {}, {}
      local consumers = {}
      for c = 1, 4 do
        got[c] = {}
        consumers[c] = async.spawn(function()
          if c % 2 == 0 then
            for v in q:iter() do
              got[c][#got[c] + 1] = v
              if v % 5 == 0 then async.yield() end
            end
          else
            while true do
              local v = q:get()
              if v == nil then break end
              got[c][#got[c] + 1] = v
              if v % 3 == 0 then async.sleep(0) end
            end
          end
          ended[#ended + 1] = c
          return #got[c]
        end)
      end
      local producer = async.spawn(function()
        for i = 1, N do q:put(i) end
        q:close()
      end)
      finish(producer)
      local total = 0
      for c = 1, 4 do total = total + finish(consumers[c]) end
      assert.equal(N, total)
      local all = {}
      for c = 1, 4 do
        for _, v in ipairs(got[c]) do all[#all + 1] = v end
        -- each consumer sees its items in queue order
        for k = 2, #got[c] do assert.is_true(got[c][k - 1] < got[c][k]) end
      end
      table.sort(all)
      assert.same(range(N), all)
      table.sort(ended)
      assert.same({ 1, 2, 3, 4 }, ended)
    end)
  end)

  describe("task_done and join", function()
    helper.it("join returns at once when nothing is unfinished", function()
      local q = async.Queue()
      q:join()
      q:put(1)
      q:get()
      q:task_done()
      q:join()
    end)

    helper.it("join waits until every item put was marked done", function()
      local q = async.Queue()
      for i = 1, 3 do q:put(i) end
      local joiners = {}
      for i = 1, 2 do joiners[i] = async.spawn(function() q:join() return "joined" end) end
      settle()
      assert.is_false(joiners[1]:done())
      for _ = 1, 3 do q:get() end
      q:task_done()
      q:task_done()
      settle()
      assert.is_false(joiners[1]:done()) -- got, but one not marked done
      assert.is_false(joiners[2]:done())
      q:put(4) -- put before the last task_done: join waits for it too
      q:task_done()
      settle()
      assert.is_false(joiners[1]:done())
      assert.equal(4, q:get())
      q:task_done()
      assert.equal("joined", finish(joiners[1]))
      assert.equal("joined", finish(joiners[2]))
    end)

    helper.it("task_done called more times than items were put raises", function()
      local q = async.Queue()
      expect_plain_error({ "task_done", "too many", "times" }, q.task_done, q)
      q:put(1)
      q:get()
      q:task_done()
      expect_plain_error({ "task_done", "too many", "times" }, q.task_done, q)
      q:join()
    end)

    helper.it("join is cancellable and obeys deadlines; the accounting stays right", function()
      local q = async.Queue()
      q:put(1)
      expect_timeout(0.02, q.join, q)
      local j = started(function() q:join() end)
      j:cancel()
      expect_cancelled(j)
      local j2 = started(function() q:join() return "joined" end)
      q:get()
      q:task_done()
      assert.equal("joined", finish(j2))
    end)

    helper.it("workers with task_done let a producer join", function()
      local q = async.Queue(3)
      local processed = 0
      local workers = {}
      for i = 1, 3 do
        workers[i] = async.spawn(function()
          for _ in q:iter() do
            async.sleep(0)
            processed = processed + 1
            q:task_done()
          end
        end)
      end
      for i = 1, 40 do q:put(i) end
      q:join()
      assert.equal(40, processed)
      q:close()
      for i = 1, 3 do finish(workers[i]) end
    end)
  end)

  describe("cancellation", function()
    helper.it("a getter cancelled while waiting takes nothing; the next getter gets the next put", function()
      local q = async.Queue()
      local a = started(function() return q:get() end)
      local b = started(function() return q:get() end)
      a:cancel()
      expect_cancelled(a)
      q:put("x")
      assert.equal("x", finish(b))
      q:put("y")
      assert.equal(1, q:size())
      assert.equal("y", q:get())
    end)

    helper.it("a getter cancelled in the same step as a put: the item goes to the next getter", function()
      local q = async.Queue()
      local a = started(function() return q:get() end)
      local b = started(function() return q:get() end)
      a:cancel()
      q:put("x")
      expect_cancelled(a)
      assert.equal("x", finish(b))
      assert.is_true(q:empty())
    end)

    helper.it("an item handed to a getter cancelled before it resumed goes to the next getter", function()
      local q = async.Queue()
      local a = started(function() return q:get() end)
      local b = started(function() return q:get() end)
      local c = started(function() return q:get() end)
      q:put("x") -- hands x to a, which has not resumed yet
      assert.is_true(a:cancel())
      expect_cancelled(a)
      assert.equal("x", finish(b))
      settle()
      assert.is_false(c:done()) -- one item, one getter
      assert.is_true(q:empty())
      q:put("y")
      assert.equal("y", finish(c))
    end)

    helper.it("an item handed to a getter cancelled before it resumed goes back when nobody waits", function()
      local q = async.Queue()
      local a = started(function() return q:get() end)
      q:put("x")
      assert.is_true(a:cancel())
      expect_cancelled(a)
      assert.equal(1, q:size())
      assert.equal("x", q:get_nowait())
      assert.is_true(q:empty())
    end)

    helper.it("items handed to several getters, one cancelled: none lost, none duplicated", function()
      local q = async.Queue()
      local a = started(function() return q:get() end)
      local b = started(function() return q:get() end)
      q:put("x")
      q:put("y")
      assert.is_true(a:cancel())
      expect_cancelled(a)
      local got = { finish(b) }
      for _, v in ipairs(drain(q)) do got[#got + 1] = v end
      table.sort(got)
      assert.same({ "x", "y" }, got)
    end)

    helper.it("a putter cancelled while waiting adds nothing and frees no slot", function()
      local q = async.Queue(1)
      q:put("a")
      local p = started(function() q:put("b") end)
      p:cancel()
      expect_cancelled(p)
      assert.equal(1, q:size())
      assert.equal("a", q:get())
      assert.is_true(q:empty())
      q:put_nowait("c")
      expect_kind("full", q.put_nowait, q, "d")
      assert.same({ "c" }, drain(q))
    end)

    helper.it("a slot handed to a putter cancelled before it resumed goes to the next putter", function()
      local q = async.Queue(1)
      q:put("a")
      local pa = started(function() q:put("b") end)
      local pb = started(function() q:put("c") return "c put" end)
      local pc = started(function() q:put("d") return "d put" end)
      assert.equal("a", q:get()) -- hands the slot to pa, which has not resumed yet
      assert.is_true(pa:cancel())
      expect_cancelled(pa)
      assert.equal("c put", finish(pb))
      settle()
      assert.is_false(pc:done()) -- one slot, one put
      assert.equal(1, q:size())
      assert.equal("c", q:get()) -- "b" was not added: no duplicate if the caller retries
      assert.equal("d put", finish(pc))
      assert.same({ "d" }, drain(q))
    end)

    helper.it("a slot handed to a putter cancelled before it resumed stays free when nobody waits", function()
      local q = async.Queue(1)
      q:put("a")
      local pa = started(function() q:put("b") end)
      assert.equal("a", q:get())
      assert.is_true(pa:cancel())
      expect_cancelled(pa)
      assert.is_true(q:empty())
      assert.equal(0, q:size())
      q:put_nowait("c")
      assert.is_true(q:full())
      assert.same({ "c" }, drain(q))
    end)

    helper.it("a putter cancelled in the same step as a get: the slot goes to the next putter", function()
      local q = async.Queue(1)
      q:put("a")
      local pa = started(function() q:put("b") end)
      local pb = started(function() q:put("c") return "c put" end)
      pa:cancel()
      assert.equal("a", q:get())
      expect_cancelled(pa)
      assert.equal("c put", finish(pb))
      assert.same({ "c" }, drain(q))
    end)

    helper.it("get and put obey deadlines and leave the queue as it was", function()
      local q = async.Queue(1)
      expect_timeout(0.02, q.get, q)
      assert.is_true(q:empty())
      q:put("a")
      expect_timeout(0.02, q.put, q, "b")
      assert.equal(1, q:size())
      assert.equal("a", q:get())
      assert.is_true(q:empty())
      -- the queue still hands items over
      local g = started(function() return q:get() end)
      q:put("c")
      assert.equal("c", finish(g))
    end)

    helper.it("many getters, half cancelled as the items arrive: every item ends up exactly once", function()
      local q = async.Queue()
      local N = 20
      local getters = {}
      for i = 1, N do getters[i] = async.spawn(function() return q:get() end) end
      settle()
      for i = 1, N do
        q:put(i)
        if i % 2 == 1 then getters[i]:cancel() end
      end
      local got = {}
      for i = 1, N do
        if i % 2 == 1 then
          expect_cancelled(getters[i])
        else
          got[#got + 1] = finish(getters[i])
        end
      end
      assert.equal(N / 2, #got)
      for _, v in ipairs(drain(q)) do got[#got + 1] = v end
      table.sort(got)
      assert.same(range(N), got)
    end)

    helper.it("random cancellations of producers and consumers: each item put is got exactly once", function()
      local q = async.Queue(3)
      local seed = 4242
      local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n end
      local put_ok, got = {}, {}
      local producers, consumers = {}, {}
      for p = 1, 8 do
        producers[p] = async.spawn(function()
          for k = 1, 25 do
            local v = p * 1000 + k
            q:put(v)
            put_ok[#put_ok + 1] = v
            if rnd(3) == 0 then async.yield() end
          end
        end)
      end
      for c = 1, 6 do
        consumers[c] = async.spawn(function()
          while true do
            local v = q:get()
            if v == nil then return end
            got[#got + 1] = v
            if rnd(2) == 0 then async.yield() end
          end
        end)
      end
      for _ = 1, 60 do
        local list = rnd(2) == 0 and producers or consumers
        local victim = list[rnd(#list) + 1]
        if not victim:done() then victim:cancel() end
        for _ = 1, rnd(4) do async.yield() end
      end
      for p = 1, 8 do
        local ok, err = pcall(finish, producers[p])
        assert.is_true(ok or async.is_cancelled(err), tostring(err))
      end
      q:close()
      for c = 1, 6 do
        local ok, err = pcall(finish, consumers[c])
        assert.is_true(ok or async.is_cancelled(err), tostring(err))
      end
      for _, v in ipairs(drain(q)) do got[#got + 1] = v end
      table.sort(put_ok)
      table.sort(got)
      assert.same(put_ok, got)
    end)
  end)
end)

-- {====== LifoQueue ======}

describe("async.LifoQueue", function()
  helper.it("gets the last item put first", function()
    local q = async.LifoQueue()
    for i = 1, 5 do q:put(i) end
    local got = {}
    for _ = 1, 5 do got[#got + 1] = q:get() end
    assert.same({ 5, 4, 3, 2, 1 }, got)
    q:put("a")
    q:put("b")
    assert.equal("b", q:get_nowait())
    q:put("c")
    assert.same({ "c", "a" }, drain(q))
  end)

  helper.it("is bounded, hands over to waiting getters and putters, and closes", function()
    local q = async.LifoQueue(2)
    assert.equal(2, q:maxsize())
    q:put(1)
    q:put(2)
    assert.is_true(q:full())
    expect_kind("full", q.put_nowait, q, 3)
    local p = started(function() q:put(3) return "put" end)
    assert.equal(2, q:get())
    assert.equal("put", finish(p))
    assert.equal(3, q:get())
    assert.equal(1, q:get())
    expect_kind("empty", q.get_nowait, q)
    local g = started(function() return q:get() end)
    q:put("x")
    assert.equal("x", finish(g))
    q:put("y")
    q:put("z")
    q:close()
    expect_kind("closed", q.put, q, "w")
    local got = {}
    for v in q:iter() do got[#got + 1] = v end
    assert.same({ "z", "y" }, got)
    assert.is_nil(q:get())
  end)

  helper.it("counts task_done for join", function()
    local q = async.LifoQueue()
    q:put(1)
    local j = started(function() q:join() return "joined" end)
    q:get()
    settle()
    assert.is_false(j:done())
    q:task_done()
    assert.equal("joined", finish(j))
  end)

  helper.it("misuse raises clear argument errors", function()
    expect_plain_error({ "queue", "maxsize", "argument" }, async.LifoQueue, "x")
    local q = async.LifoQueue()
    expect_plain_error({ "put", "nil", "argument" }, q.put, q, nil)
  end)
end)

-- {====== PriorityQueue ======}

describe("async.PriorityQueue", function()
  helper.it("gets the smallest item first", function()
    local q = async.PriorityQueue()
    for _, v in ipairs({ 5, 1, 4, 2, 3, 9, 0, 7, 8, 6 }) do q:put(v) end
    local got = {}
    for _ = 1, 10 do got[#got + 1] = q:get() end
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, got)
    for _, v in ipairs({ "pear", "apple", "fig" }) do q:put(v) end
    assert.same({ "apple", "fig", "pear" }, drain(q))
  end)

  helper.it("always gets the minimum of what it holds (random puts interleaved with gets)", function()
    local q = async.PriorityQueue()
    local seed = 7
    local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n end
    local model = {} -- what the queue holds
    local function take_min()
      local mi = 1
      for i = 2, #model do if model[i] < model[mi] then mi = i end end
      return table.remove(model, mi)
    end
    for step = 1, 600 do
      if rnd(3) == 0 and #model > 0 then
        local want = take_min()
        local v = q:get()
        if v ~= want then assert.equal(want, v, "get at step " .. step) end
      else
        local v = rnd(1000)
        model[#model + 1] = v
        q:put(v)
      end
      if q:size() ~= #model then assert.equal(#model, q:size()) end
    end
    table.sort(model)
    assert.same(model, drain(q))
  end)

  helper.it("returns equal priorities in insertion order (stable)", function()
    local q = async.PriorityQueue(nil, function(a, b) return a.p < b.p end)
    local seed = 99
    local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n end
    local items = {}
    for i = 1, 300 do
      local it = { p = rnd(5), seq = i }
      items[i] = it
      q:put(it)
    end
    local want = {}
    for i = 1, 300 do want[i] = items[i] end
    table.sort(want, function(a, b)
      if a.p ~= b.p then return a.p < b.p end
      return a.seq < b.seq
    end)
    for i = 1, 300 do
      local it = q:get()
      if it ~= want[i] then
        assert.same({ p = want[i].p, seq = want[i].seq }, { p = it.p, seq = it.seq }, "item #" .. i)
      end
    end
    assert.is_true(q:empty())
  end)

  helper.it("keeps equal keys in insertion order with a key comparison", function()
    local q = async.PriorityQueue()
    q:put(2)
    q:put(1)
    q:put(2)
    q:put(1)
    assert.same({ 1, 1, 2, 2 }, drain(q))
    local q2 = async.PriorityQueue(nil, function(a, b) return a[1] < b[1] end)
    local x1, x2, x3, y1 = { 1, "x1" }, { 1, "x2" }, { 1, "x3" }, { 0, "y1" }
    q2:put(x1)
    q2:put(x2)
    q2:put(y1)
    q2:put(x3)
    local order = {}
    for _, v in ipairs(drain(q2)) do order[#order + 1] = v[2] end
    assert.same({ "y1", "x1", "x2", "x3" }, order)
  end)

  helper.it("uses a custom less", function()
    local q = async.PriorityQueue(nil, function(a, b) return a > b end)
    for _, v in ipairs({ 3, 1, 4, 1, 5, 9, 2, 6 }) do q:put(v) end
    assert.same({ 9, 6, 5, 4, 3, 2, 1, 1 }, drain(q))
  end)

  helper.it("is bounded and hands over to waiting getters and putters", function()
    local q = async.PriorityQueue(2)
    assert.equal(2, q:maxsize())
    q:put(5)
    q:put(3)
    assert.is_true(q:full())
    expect_kind("full", q.put_nowait, q, 1)
    local p = started(function() q:put(1) return "put" end)
    assert.equal(3, q:get())
    assert.equal("put", finish(p))
    assert.equal(1, q:get())
    assert.equal(5, q:get())
    expect_kind("empty", q.get_nowait, q)
    local g = started(function() return q:get() end)
    q:put(42)
    assert.equal(42, finish(g))
  end)

  helper.it("an item handed to a cancelled getter goes back in priority order", function()
    local q = async.PriorityQueue()
    local a = started(function() return q:get() end)
    q:put(5)
    assert.is_true(a:cancel())
    expect_cancelled(a)
    q:put(7)
    q:put(1)
    assert.same({ 1, 5, 7 }, drain(q))
  end)

  helper.it("closes like a Queue", function()
    local q = async.PriorityQueue()
    q:put(3)
    q:put(1)
    q:close()
    expect_kind("closed", q.put, q, 2)
    local got = {}
    for v in q:iter() do got[#got + 1] = v end
    assert.same({ 1, 3 }, got)
    assert.is_nil(q:get())
  end)

  helper.it("misuse raises clear argument errors", function()
    expect_plain_error({ "queue", "maxsize", "argument" }, async.PriorityQueue, "x")
    expect_plain_error({ "queue", "maxsize", "argument" }, async.PriorityQueue, -1)
    local q = async.PriorityQueue()
    expect_plain_error({ "put", "nil", "argument" }, q.put, q, nil)
  end)
end)
