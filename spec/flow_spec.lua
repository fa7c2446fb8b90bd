-- lasync.flow: tracked node calls with policies, runs, logs, traces, summaries and workers.
local helper = require("spec.helper")
local async = helper.async
local flow = require("lasync.flow")
local cjson = require("cjson")

local tmpfile = helper.tmpfile

local function read(path) return (assert(helper.readfile(path))) end

local function by_node(run, name)
  local out = {}
  for _, c in ipairs(run.calls) do
    if c.node == name then out[#out + 1] = c end
  end
  return out
end

describe("lasync.flow nodes", function()
  helper.it("a node is callable and returns its function's results; async.flow is the module", function()
    assert.equal(flow, async.flow)
    local add = flow.node("add", function(a, b) return a + b, "sum" end)
    assert.same({ n = 2, 5, "sum" }, table.pack(add(2, 3)))
    assert.same({ n = 2, 7, "sum" }, table.pack(flow.call(add, 3, 4)))
    assert.equal(9, flow.call(function(x) return x * 3 end, 3))  -- a plain function
    assert.equal("lasync.flow.Node 'add'", tostring(add))
  end)

  helper.it("bad policies and arguments raise clear errors", function()
    local f = function() end
    local function err(...)
      local ok, e = pcall(flow.node, ...)
      assert.is_false(ok)
      return e
    end
    assert.matches("flow.node: unknown option 'retrys' %(did you mean 'retries'%?%)",
                   err("n", f, { retrys = 2 }))
    assert.matches("flow.node: option 'timeout' must be a number >= 0", err("n", f, { timeout = "1" }))
    assert.matches("flow.node: option 'rate.rate' must be a number > 0",
                   err("n", f, { rate = { rate = 0 } }))
    assert.matches("flow.node: option 'concurrency' must be an integer >= 1",
                   err("n", f, { concurrency = 0 }))
    assert.matches("name must be a non%-empty string", err("", f))
    assert.matches("fn must be a function", err("n", 42))
    local ok, e = pcall(flow.call, 42)
    assert.is_false(ok)
    assert.matches("expected a node or a function", e)
  end)

  helper.it("outside a session the policy applies (retries) and nothing is recorded", function()
    local tries = 0
    local flaky = flow.node("flaky", function()
      tries = tries + 1
      if tries < 3 then error(async.new_error("network", "connection reset")) end
      return "done"
    end, { retries = 2, backoff = 0 })
    assert.equal("done", flaky())
    assert.equal(3, tries)
    assert.is_nil(flow.current())
  end)

  helper.it("retries only what retry_on accepts (default: transient errors), up to retries", function()
    local calls = 0
    local function failing(kind, status)
      return flow.node("f", function()
        calls = calls + 1
        error(async.new_error(kind, "failed", { status = status }))
      end, { retries = 3, backoff = 0 })
    end
    for _, case in ipairs({ { "connect", nil, 4 }, { "network", nil, 4 }, { "timeout", nil, 4 },
                            { "http", 503, 4 }, { "http", 429, 4 }, { "http", 404, 1 },
                            { "dns", nil, 1 }, { "protocol", nil, 1 } }) do
      calls = 0
      assert.is_false(pcall(failing(case[1], case[2])))
      assert.equal(case[3], calls, case[1] .. " " .. tostring(case[2]))
    end
    calls = 0
    local picky = flow.node("picky", function() calls = calls + 1; error("transient-ish") end,
      { retries = 2, backoff = 0, retry_on = function(e) return tostring(e):find("transient") end })
    assert.is_false(pcall(picky))
    assert.equal(3, calls)
    local ok, e = pcall(flow.node("plain", function() error({ code = 7 }) end, { retries = 2 }))
    assert.is_false(ok)
    assert.equal(7, e.code)  -- the error value passes through unchanged
  end)

  helper.it("a Retry-After carried by the error is the delay before the next attempt", function()
    local n, delays = 0, {}
    local limited = flow.node("limited", function()
      n = n + 1
      if n == 1 then error(async.new_error("http", "429", { status = 429, retry_after = 0.05 })) end
      return n
    end, { retries = 1, backoff = 10, max_backoff = 10 })
    local _ <close> = flow.session{ on_event = function(ev)
      if ev.event == "retry" then delays[#delays + 1] = ev.delay end
    end }
    local t0 = async.now()
    assert.equal(2, limited())
    assert.same({ 0.05 }, delays)  -- not the 10 s backoff
    assert.is_true(async.now() - t0 >= 0.045)
  end)

  helper.it("timeout is per attempt: a call that times out is retried, then recorded as timeout", function()
    local attempts = 0
    local slow = flow.node("slow", function()
      attempts = attempts + 1
      async.sleep(10)
    end, { timeout = 0.01, retries = 1, backoff = 0 })
    local run <close> = flow.session{}
    local ok, e = pcall(slow)
    assert.is_false(ok)
    assert.is_true(async.is_timeout(e))
    assert.equal(2, attempts)
    local c = run.calls[1]
    assert.equal("timeout", c.status)
    assert.equal(2, c.attempt)
    assert.equal(1, #c.attempts)
    assert.equal("timeout", c.attempts[1][3])
  end)

  helper.it("concurrency bounds the calls of a node in flight, across tasks, in FIFO order", function()
    local inflight, top, order = 0, 0, {}
    local node = flow.node("bounded", function(i)
      inflight = inflight + 1
      top = math.max(top, inflight)
      order[#order + 1] = i
      async.sleep(0.005)
      inflight = inflight - 1
    end, { concurrency = 3 })
    local tasks = {}
    for i = 1, 12 do tasks[i] = async.spawn(node, i) end
    async.gather(tasks)
    assert.equal(3, top)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, order)
  end)

  helper.it("rate spaces the calls by a RateLimiter", function()
    local node = flow.node("rated", function() return true end,
                           { rate = { rate = 50, per = 1, burst = 1 } })
    local t0 = async.now()
    for _ = 1, 5 do node() end
    assert.is_true(async.now() - t0 >= 0.07, "5 calls at 50/s with burst 1 took < 80 ms")
  end)
end)

describe("lasync.flow sessions", function()
  helper.it("records every call with its parent: inline, map, gather, async.spawn/gather", function()
    local leaf = flow.node("leaf", function(x) async.sleep(0) return x * 2 end)
    local mid = flow.node("mid", function(x)
      local a = leaf(x)                                              -- inline, same task
      local b = async.spawn(leaf, x + 1):await()                     -- a plain spawn
      local c = async.gather(function() return leaf(x + 2) end)      -- a plain gather
      return a + b + c
    end)
    local top = flow.node("top", function()
      local r = flow.map(mid, { 1, 10 })
      local g = flow.gather(flow.node("g", function() return 5 end), function() return leaf(100) end)
      return r[1] + r[2], g
    end)
    local run <close> = flow.session{ name = "tree" }
    local sum, g = top()
    assert.equal((2 + 4 + 6) + (20 + 22 + 24), sum)
    assert.equal(5, g)
    local by_id = {}
    for _, c in ipairs(run.calls) do by_id[c.id] = c end
    local top_call = by_node(run, "top")[1]
    assert.is_nil(top_call.parent)
    local mids = by_node(run, "mid")
    assert.equal(2, #mids)
    for _, m in ipairs(mids) do assert.equal(top_call.id, m.parent) end
    local leaves = by_node(run, "leaf")
    assert.equal(7, #leaves)
    local under_mid, under_top = 0, 0
    for _, l in ipairs(leaves) do
      local p = by_id[l.parent]
      if p.node == "mid" then under_mid = under_mid + 1 end
      if p.node == "top" then under_top = under_top + 1 end
      assert.equal("ok", l.status)
    end
    assert.equal(6, under_mid)
    assert.equal(1, under_top)  -- leaf(100), from a plain function in flow.gather
    assert.equal(top_call.id, by_node(run, "g")[1].parent)
    for _, c in ipairs(run.calls) do
      assert.is_number(c.started)
      assert.is_true(c.ended >= c.started)
      assert.is_string(c.task)
    end
  end)

  helper.it("calls after the block, or outside it, are not recorded", function()
    local node = flow.node("n", function() return 1 end)
    local run
    do
      local r <close> = flow.session{}
      run = r
      node()
    end
    node()
    assert.equal(1, #run.calls)
    assert.equal("ok", run.status)
    assert.is_number(run.ended)
  end)

  helper.it("previews: arguments and results, redacted keys, a byte limit, capture = false", function()
    local echo = flow.node("echo", function(...) return ... end)
    local quiet = flow.node("quiet", function(x) return x end, { capture = false })
    local run <close> = flow.session{ preview_bytes = 100, redact = { "secret" } }
    echo("a", 1, true, { k = "v", secret = "hunter2", n = { 1, 2 } })
    echo(string.rep("x", 500))
    quiet("invisible")
    local c1, c2, c3 = run.calls[1], run.calls[2], run.calls[3]
    assert.is_truthy(c1.input:find('"a", 1, true', 1, true), c1.input)
    assert.is_truthy(c1.input:find("<redacted>", 1, true), c1.input)
    assert.is_falsy(c1.input:find("hunter2", 1, true), c1.input)
    assert.is_true(#c2.input <= 103, #c2.input .. " bytes")
    assert.equal("...", c2.input:sub(-3))
    assert.is_nil(c3.input)
    assert.is_nil(c3.output)
    -- the default redaction list
    local run2 <close> = flow.session{}
    echo({ Authorization = "Bearer x", api_key = "k", password = "p", token = "t", user = "u" })
    local p = run2.calls[1].input
    for _, s in ipairs({ "Bearer", '"k"', '"p"', '"t"' }) do
      assert.is_falsy(p:find(s, 1, true), p)
    end
    assert.is_truthy(p:find('"u"', 1, true), p)
  end)

  helper.it("hostile values still get previews: cycles, metatables, huge, non-string errors", function()
    local cyc = {}
    cyc.self = cyc
    local odd = setmetatable({}, { __tostring = function() error("no tostring for you") end })
    local big = {}
    for i = 1, 100000 do big[i] = i end
    local node = flow.node("hostile", function(x) return x end)
    local bad = flow.node("bad", function(e) error(e) end)
    local run <close> = flow.session{}
    node(cyc)
    node(odd)
    node(big)
    node(print)
    assert.is_false(pcall(bad, { code = 1 }))
    assert.is_false(pcall(bad, odd))
    assert.is_false(pcall(bad, nil))
    for _, c in ipairs(run.calls) do
      assert.is_string(c.input)
      assert.is_true(#c.input <= 210, #c.input)
      if c.node == "bad" then
        assert.equal("error", c.status)
        assert.is_string(c.error)
        assert.is_string(c.traceback)
      else
        assert.is_string(c.output)
      end
    end
    assert.is_truthy(run.calls[1].input:find("<cycle>", 1, true))
  end)

  helper.it("name_of labels calls; flow.metric adds up; flow.current is the running call", function()
    local seen
    local llm = flow.node("llm", function(prompt)
      seen = flow.current()
      flow.metric("tokens", #prompt)
      flow.metric("tokens", 10)
      flow.metric("cost", 0.5)
      return "ok"
    end, { name_of = function(prompt) return "prompt:" .. prompt:sub(1, 3) end })
    local run <close> = flow.session{}
    llm("hello world")
    llm("bye")
    local c = run.calls[1]
    assert.equal(c, seen and run.calls[2] and c)  -- flow.current() was a record of this run
    assert.equal("prompt:hel", c.label)
    assert.same({ tokens = 21, cost = 0.5 }, c.metrics)
    local stats = run:stats()
    assert.equal(1, #stats)
    assert.same({ tokens = 34, cost = 1.0 }, stats[1].metrics)
    local text = run:summary()
    assert.matches("node%s+calls%s+ok%s+failed%s+retried%s+p50%s+p95%s+max%s+busy%s+cost%s+tokens", text)
    assert.matches("llm%s+2%s+2%s+0%s+0", text)
    assert.matches("%s34\n", text)
    flow.metric("outside", 1)  -- no current call: ignored
  end)

  helper.it("the run's status: ok, error (the block raised) and cancelled; run.error", function()
    local node = flow.node("n", function() return 1 end)
    local ok_run
    do
      local r <close> = flow.session{}
      ok_run = r
      node()
    end
    assert.equal("ok", ok_run.status)
    local err_run
    local ok = pcall(function()
      local r <close> = flow.session{}
      err_run = r
      node()
      error("the block failed")
    end)
    assert.is_false(ok)
    assert.equal("error", err_run.status)
    assert.matches("the block failed", tostring(err_run.error))
  end)

  helper.it("cancelling a run cancels its calls, records them as cancelled and writes the files", function()
    local log, trace, report = tmpfile(".jsonl"), tmpfile(".json"), tmpfile(".html")
    local started = async.Event()
    local slow = flow.node("slow", function() started:set() async.sleep(30) end)
    local run
    local t = async.spawn(function()
      local r <close> = flow.session{ log = log, trace = trace, report = report }
      run = r
      flow.map(slow, { 1, 2, 3 })
    end)
    started:wait()
    async.sleep(0.01)
    t:cancel("stop")
    assert.is_false(pcall(t.await, t))
    assert.equal("cancelled", run.status)
    assert.equal(3, #run.calls)
    for _, c in ipairs(run.calls) do assert.equal("cancelled", c.status) end
    local finishes = 0
    for line in io.lines(log) do
      local ev = cjson.decode(line)
      if ev.event == "finish" then
        finishes = finishes + 1
        assert.equal("cancelled", ev.status)
      end
    end
    assert.equal(3, finishes)
    assert.is_truthy(read(trace):find('"status":"cancelled"', 1, true))
    assert.is_truthy(read(report):find("<html", 1, true))
    os.remove(log); os.remove(trace); os.remove(report)
  end)

  helper.it("the log is JSON lines, written and flushed as calls start and finish", function()
    local log = tmpfile(".jsonl")
    local gate = async.Event()
    local first_done = async.Event()
    local a = flow.node("a", function() return "A" end)
    local b = flow.node("b", function() first_done:set() gate:wait() return "B" end)
    local t = async.spawn(function()
      local _ <close> = flow.session{ log = log, name = "logged" }
      a()
      b()
    end)
    first_done:wait()
    -- the run is still going: what happened so far is in the file already
    local lines = {}
    for line in io.lines(log) do lines[#lines + 1] = cjson.decode(line) end
    assert.equal("run_start", lines[1].event)
    assert.equal("logged", lines[1].name)
    assert.same({ "start", "a" }, { lines[2].event, lines[2].node })
    assert.same({ "finish", "a", "ok" }, { lines[3].event, lines[3].node, lines[3].status })
    assert.same({ "start", "b" }, { lines[4].event, lines[4].node })
    assert.equal(4, #lines)
    gate:set()
    t:await()
    lines = {}
    for line in io.lines(log) do lines[#lines + 1] = cjson.decode(line) end
    assert.equal("run_end", lines[#lines].event)
    assert.equal("ok", lines[#lines].status)
    os.remove(log)
  end)

  helper.it("flow.run returns the Run, with the result or the error (it does not raise)", function()
    local run = flow.run(function(a, b) return a + b, "x" end, 1, 2)
    assert.equal("ok", run.status)
    assert.same({ n = 2, 3, "x" }, run.result)
    local failed = flow.run_with({ name = "failing" }, flow.node("boom", function() error("boom!") end))
    assert.equal("error", failed.status)
    assert.equal("failing", failed.name)
    assert.matches("boom!", tostring(failed.error))
    assert.equal("error", failed.calls[1].status)
    local ok, e = pcall(flow.run_with, { nme = "x" }, print)
    assert.is_false(ok)
    assert.matches("unknown option 'nme'", e)
  end)

  it("flow.run runs as the main task when no loop is running (plain lua5.4)", function()
    local r = helper.lua([[
      local flow = require("lasync.flow")
      local async = require("lasync")
      local run = flow.run(function(n) async.sleep(0.01) return n * 2 end, 21)
      print(run.status, run.result[1], #run.calls, async.current_task() == nil)
    ]])
    assert.equal(0, r.code, r.stderr)
    assert.equal("ok\t42\t1\ttrue\n", r.stdout)
  end)

  helper.it("100,000 calls with 5% failures: every call id once, with a final status #slow", function()
    local node = flow.node("n", function(i)
      if i % 20 == 0 then error("fail " .. i) end
      return i
    end, { capture = false })
    local run <close> = flow.session{}
    local N = 100000
    for i = 1, N do pcall(node, i) end
    assert.equal(N, #run.calls)
    local failed, wrong = 0, nil
    for i, c in ipairs(run.calls) do  -- (plain checks: luassert's would dominate the time)
      if c.id ~= i or not (c.status == "ok" or c.status == "error") then wrong = wrong or c end
      if c.status == "error" then failed = failed + 1 end
    end
    assert.is_nil(wrong and (wrong.id .. " " .. wrong.status))
    assert.equal(N / 20, failed)
  end)
end)

-- The rules of the Chrome Trace Event Format (the "JSON Object Format" with traceEvents), as the
-- Perfetto UI and chrome://tracing read it.
local function check_trace(t)
  -- plain checks, not luassert's: they run for every event of a 100,000-call trace
  local function need(cond, what) if not cond then error("trace: " .. what, 2) end end
  need(type(t.traceEvents) == "table", "traceEvents must be a list")
  local flows = {}
  local names = {}
  for i, e in ipairs(t.traceEvents) do
    local where = "event " .. i .. ": "
    need(type(e.ph) == "string", where .. "ph")
    need(type(e.pid) == "number", where .. "pid")
    if e.ph == "X" then
      need(type(e.name) == "string", where .. "name")
      need(type(e.ts) == "number" and type(e.dur) == "number", where .. "ts and dur")
      need(e.ts >= 0 and e.dur >= 0, where .. "ts and dur >= 0 (microseconds)")
      need(type(e.tid) == "number", where .. "tid")
      need(type(e.args) == "table", where .. "args")
    elseif e.ph == "M" then
      need(e.name == "process_name" or e.name == "thread_name", where .. tostring(e.name))
      need(type(e.args) == "table" and type(e.args.name) == "string", where .. "metadata name")
      if e.name == "thread_name" then names[e.tid] = e.args.name end
    elseif e.ph == "s" or e.ph == "f" then
      need(type(e.id) == "number", where .. "flow id")
      need(type(e.cat) == "string", where .. "flow cat")
      need(type(e.ts) == "number", where .. "flow ts")
      if e.ph == "f" then need(e.bp == "e", where .. "a flow end binds to its slice") end
      flows[e.id] = flows[e.id] or {}
      flows[e.id][e.ph] = e
    else
      error(where .. "unexpected phase " .. tostring(e.ph))
    end
  end
  for id, pair in pairs(flows) do
    need(pair.s and pair.f, "flow " .. id .. " needs a start and an end")
    need(pair.s.cat == pair.f.cat, "flow " .. id .. ": one category")
  end
  return names
end

describe("lasync.flow traces", function()
  helper.it("save_trace writes Chrome Trace Event JSON: one X event per attempt, lanes, flows", function()
    local path = tmpfile(".json")
    local n = 0
    local leaf = flow.node("leaf", function()
      n = n + 1
      if n == 1 then error(async.new_error("network", "reset")) end
      return n
    end, { retries = 1, backoff = 0 })
    local top = flow.node("top", function()
      return async.spawn(leaf):await()  -- in another task: another lane, and a flow arrow
    end)
    local run <close> = flow.session{ name = "traced" }
    top()
    run:save_trace(path)
    local t = cjson.decode(read(path))
    local lanes = check_trace(t)
    local xs, flows = {}, 0
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" then xs[#xs + 1] = e end
      if e.ph == "s" then flows = flows + 1 end
    end
    assert.equal(3, #xs)  -- top, and leaf's two attempts
    local leaf_x = {}
    for _, e in ipairs(xs) do if e.name == "leaf" then leaf_x[#leaf_x + 1] = e end end
    assert.equal(2, #leaf_x)
    assert.same({ 1, 2 }, { leaf_x[1].args.attempt, leaf_x[2].args.attempt })
    assert.same({ "error", "ok" }, { leaf_x[1].args.status, leaf_x[2].args.status })
    assert.is_true(leaf_x[2].ts >= leaf_x[1].ts + leaf_x[1].dur)
    assert.equal(1, flows)
    assert.is_true(leaf_x[1].tid ~= xs[1].tid or xs[1].name ~= "top")
    assert.is_string(lanes[leaf_x[1].tid])
    os.remove(path)
  end)

  helper.it("save_trace of 100,000 calls is valid and takes well under a second #slow", function()
    local path = tmpfile(".json")
    local node = flow.node("n", function(i) return i end, { capture = false })
    local run <close> = flow.session{}
    for i = 1, 100000 do node(i) end
    run:save_trace(path)
    local t = cjson.decode(read(path))
    check_trace(t)
    local xs = 0
    for _, e in ipairs(t.traceEvents) do if e.ph == "X" then xs = xs + 1 end end
    assert.equal(100000, xs)
    os.remove(path)
  end)
end)

describe("lasync.flow progress", function()
  local SCRIPT = [[
    local async = require("lasync")
    local flow = async.flow
    local step = flow.node("step", function(i)
      async.sleep(0.05)
      if i %% 4 == 0 then error("x") end
      return i
    end, { retries = %s, backoff = 0, retry_on = function() return true end })
    local run <close> = flow.session{ name = "prog"%s }
    flow.map(step, { 1, 2, 3, 4, 5, 6, 7, 8 }, { concurrency = 2, return_errors = true })
    flow.print("printed")
  ]]

  -- runs the script under a pseudo-terminal (script(1)); returns what the terminal got
  local function on_tty(opts, retries)
    local path = helper.script(SCRIPT:format(retries or "0", opts or ""))
    local r = helper.sh("script -qec " .. helper.q(helper.q(helper.LASYNC) .. " " .. helper.q(path))
                        .. " /dev/null")
    return r
  end

  it("on a terminal: one line on stderr, redrawn at most 10 times a second, cleaned at the end", function()
    local t0 = os.time()
    local r = on_tty(nil, "1")
    assert.equal(0, r.code, r.stderr)
    local out = r.stdout
    assert.matches("flow prog:%s+%d/8 done", out)
    assert.matches("running", out)
    assert.matches("calls/s", out)
    assert.matches("failed", out)
    assert.matches("retried", out)
    local draws = select(2, out:gsub("\rflow prog:", ""))
    local secs = math.max(1, os.time() - t0 + 1)
    assert.is_true(draws >= 2 and draws <= secs * 10 + 3, draws .. " draws in " .. secs .. " s")
    assert.matches("\r\27%[Kprinted", out)  -- flow.print clears the line first
    assert.equal("\r\27[K", out:sub(-4))          -- and the run leaves the line clean
  end)

  it("a run that is cancelled (as by Ctrl-C) leaves the terminal clean too", function()
    local path = helper.script([[
      local async = require("lasync")
      local flow = async.flow
      local slow = flow.node("slow", function() async.sleep(30) end)
      local t = async.spawn(function()
        local run <close> = flow.session{ name = "stopped" }
        flow.map(slow, { 1, 2, 3 })
      end)
      async.sleep(0.35)
      t:cancel("Ctrl-C")
      pcall(t.await, t)
      io.write("after\n")
    ]])
    local r = helper.sh("script -qec " .. helper.q(helper.q(helper.LASYNC) .. " " .. helper.q(path))
                        .. " /dev/null")
    assert.equal(0, r.code, r.stderr)
    assert.matches("flow stopped:%s+0/3 done%s+3 running", r.stdout)
    assert.matches("\r\27%[Kafter\r?\n$", r.stdout)  -- cleared before the script went on
  end)

  it("off when stderr is not a terminal, or with progress = false", function()
    local path = helper.script(SCRIPT:format("0", ""))
    local r = helper.lasync(helper.q(path))
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    assert.equal("printed\n", r.stdout)
    r = on_tty(", progress = false")
    assert.equal(0, r.code, r.stderr)
    assert.is_falsy(r.stdout:find("flow prog", 1, true), r.stdout)
  end)

  it("lasync --trace/--report/--log/--progress runs the script as a flow run", function()
    local trace, report, log = os.tmpname(), os.tmpname(), os.tmpname()
    local path = helper.script([[
      local flow = require("lasync.flow")
      local step = flow.node("step", function(i) return i * 2 end)
      print(flow.map(step, { 1, 2, 3 })[3])
    ]])
    local r = helper.lasync(table.concat({ "--trace", helper.q(trace), "--report", helper.q(report),
      "--log", helper.q(log), helper.q(path) }, " "))
    assert.equal(0, r.code, r.stderr)
    assert.equal("6\n", r.stdout)
    local t = cjson.decode(helper.readfile(trace))
    local xs = 0
    for _, e in ipairs(t.traceEvents) do if e.ph == "X" and e.name == "step" then xs = xs + 1 end end
    assert.equal(3, xs)
    assert.is_truthy(helper.readfile(report):find("<html", 1, true))
    assert.is_truthy(helper.readfile(log):find('"event":"run_end"', 1, true))
    os.remove(trace); os.remove(report); os.remove(log)
    r = helper.lasync("--trace")
    assert.equal(1, r.code)
    assert.matches("'%-%-trace' needs argument", r.stderr)
  end)
end)

describe("lasync.flow workers", function()
  helper.it("submit runs jobs at most n at a time; jobs have a status, a result and await", function()
    local inflight, top = 0, 0
    local w <close> = flow.worker{ concurrency = 2, name = "pool" }
    local function job(x)
      inflight = inflight + 1
      top = math.max(top, inflight)
      async.sleep(0.01)
      inflight = inflight - 1
      return x * 10
    end
    local jobs = {}
    for i = 1, 5 do jobs[i] = w:submit(job, i) end
    assert.equal("pending", jobs[1]:status())
    async.sleep(0)
    assert.same({ pending = 3, running = 2, done = 0, failed = 0, cancelled = 0 }, w:stats())
    assert.is_false(w:is_finished())
    assert.equal(30, jobs[3]:await())
    local results = w:join()
    assert.same({ n = 5, 10, 20, 30, 40, 50 }, results)
    assert.is_true(w:is_finished())
    assert.equal("done", jobs[5]:status())
    assert.equal(50, jobs[5]:result())
    assert.equal(2, top)
  end)

  helper.it("join raises the first failure unless return_errors; close cancels what is pending", function()
    local w = flow.worker{ concurrency = 1 }
    w:submit(function() return 1 end)
    w:submit(function() error("job failed") end)
    local ok, e = pcall(w.join, w)
    assert.is_false(ok)
    assert.matches("job failed", e)
    local r = w:join({ return_errors = true })
    assert.equal(1, r[1])
    assert.matches("job failed", tostring(r[2]))
    assert.same({ pending = 0, running = 0, done = 1, failed = 1, cancelled = 0 }, w:stats())
    local gate = async.Event()
    local running = w:submit(function() gate:wait() return "finished" end)
    local pending = w:submit(function() return "never" end)
    async.sleep(0)
    local closer = async.spawn(function() w:close() end)
    async.sleep(0)
    assert.equal("cancelled", pending:status())
    assert.equal("running", running:status())
    gate:set()
    closer:await()
    assert.equal("finished", running:result())
    local ok2, e2 = pcall(w.submit, w, print)
    assert.is_false(ok2)
    assert.matches("the worker is closed", e2)
    assert.is_false(pcall(flow.worker, { concurrency = 0 }))
    assert.is_false(pcall(flow.worker, {}))
  end)

  helper.it("jobs submitted inside a run are tracked calls", function()
    local w <close> = flow.worker{ concurrency = 4 }
    local job = flow.node("job", function(x) return x end)
    local run <close> = flow.session{}
    local outer = flow.node("outer", function()
      for i = 1, 3 do w:submit(job, i) end
      return w:join()
    end)
    outer()
    local jobs = by_node(run, "job")
    assert.equal(3, #jobs)
    for _, c in ipairs(jobs) do assert.equal(by_node(run, "outer")[1].id, c.parent) end
  end)
end)
