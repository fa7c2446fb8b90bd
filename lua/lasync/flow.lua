-- lasync.flow: tracked node calls with policies, runs with logs, traces and a browser report,
-- a live progress line, and worker pools (also `async.flow`).
--
--   local flow = require("lasync.flow")
--   local fetch = flow.node("fetch", function(url) return http.get(url).body end,
--                           { timeout = 10, retries = 3, concurrency = 8 })
--   local run <close> = flow.session{ name = "crawl", trace = "crawl.json", report = "crawl.html" }
--   local pages = flow.map(fetch, urls)
--
-- A call records who made it: the node call running in the task that made it (a ContextVar,
-- so calls in tasks spawned inside a node, by flow.map/gather or plain async.spawn/gather, get
-- the right parent). Records are arrays (see the R_* fields) to stay small: 100,000 calls fit
-- in a few tens of megabytes.
local core = require("lasync.core")
local async = require("lasync")
local sync = require("lasync.sync")
local check = require("lasync.check")
local ContextVar = require("lasync.context").ContextVar

local M = {}

local type, error, pcall, xpcall, tostring, select = type, error, pcall, xpcall, tostring, select
local setmetatable, getmetatable, pairs, ipairs, next = setmetatable, getmetatable, pairs,
  ipairs, next
local rawget = rawget
local pack, unpack, concat, sort = table.pack, table.unpack, table.concat, table.sort
local fmt, floor, huge, min, max = string.format, math.floor, math.huge, math.min, math.max
local now, sleep, current_task = core.now, core.sleep, core.current_task
local traceback = debug.traceback

-- What a call in this task belongs to: the record of the call running (which knows its run),
-- or the Run of the session around (the calls made in its block have no parent), or nil.
local CURRENT = ContextVar("lasync.flow.current")

-- {====== JSON strings and previews ======}

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
              ["\r"] = "\\r", ["\t"] = "\\t" }
local function esc_char(c) return ESC[c] or fmt("\\u%04x", c:byte()) end

-- s as a JSON string (s is valid UTF-8 or not: bytes >= 0x80 pass through, browsers cope)
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', esc_char) .. '"'
end
M._json_string = jstr

local function jnum(n)
  if n ~= n or n == huge or n == -huge then return "null" end
  if math.type(n) == "integer" then return tostring(n) end
  return fmt("%.17g", n)
end

local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "<" .. type(v) .. ">"
end

local function ident(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil end

-- A short, readable text of the values vals[first..last] (JSON-ish, Lua tables as {k = v}),
-- at most `limit` bytes; keys named in `redact` (lower-case set) show "<redacted>". Never
-- raises: cycles, metatables, userdata, huge and deep tables all get a preview.
local function scalar(v, limit)  -- a scalar's preview, or nil
  local t = type(v)
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  if t == "string" and #v <= limit - 2 and not v:find('[%c"\\]') then return '"' .. v .. '"' end
  return nil
end

local function preview(vals, first, last, limit, redact)
  if last < first then return "" end
  if last - first <= 1 then  -- one or two plain values: no tables to walk (the usual case)
    local a = scalar(vals[first], limit)
    if a and last == first + 1 then
      local b = scalar(vals[last], limit)
      if b and #a + #b + 2 <= limit then return a .. ", " .. b end
    elseif a then
      return a
    end
  end
  local out, n, size, full = {}, 0, 0, false
  local seen = {}
  local function put(s)
    if full then return end
    if size + #s > limit then
      s = s:sub(1, max(0, limit - size))
      full = true
    end
    n = n + 1
    out[n] = s
    size = size + #s
  end
  local function value(v, depth)
    local t = type(v)
    if t == "string" then
      if #v > limit then v = v:sub(1, limit) end
      put(jstr(v))
    elseif t == "number" or t == "boolean" or t == "nil" then
      put(tostring(v))
    elseif t == "table" and getmetatable(v) == nil then
      if seen[v] then put("<cycle>") return end
      if depth > 3 then put("{...}") return end
      seen[v] = true
      put("{")
      local i, count = 0, 0
      for k, x in next, v do
        if full then break end
        count = count + 1
        if count > 1 then put(", ") end
        if count > 50 then put("...") break end
        if math.type(k) == "integer" and k == i + 1 then
          i = k
        elseif ident(k) then
          put(k .. " = ")
        else
          put("[")
          value(k, depth + 1)
          put("] = ")
        end
        if type(k) == "string" and redact[k:lower()] then put('"<redacted>"') else
          value(x, depth + 1)
        end
      end
      put("}")
      seen[v] = nil
    else
      put(safe_tostring(v))  -- functions, userdata, threads, tables with a metatable
    end
  end
  for i = first, last do
    if i > first then put(", ") end
    value(vals[i], 0)
    if full then break end
  end
  local s = concat(out, "", 1, n)
  if full then s = s .. "..." end
  return s
end
M._preview = preview

-- {====== nodes and policies ======}

local Node = {}
Node.__index = Node
Node.__name = "lasync.flow.Node"

local POLICY = check.spec("flow.node", {
  timeout = check.seconds, retries = check.natural, backoff = check.seconds,
  max_backoff = check.seconds, retry_on = check.callable, concurrency = check.count,
  rate = { rate = check.positive, per = check.positive, burst = check.positive },
  capture = check.boolean, name_of = check.callable,
})

local TRANSIENT_KINDS = { connect = true, network = true, timeout = true }
local TRANSIENT_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }

-- The default retry_on: transient errors (a lost connection, a timeout, an HTTP 429/502/503/504).
local function transient(err)
  if type(err) ~= "table" then return false end
  local kind = rawget(err, "kind")
  if TRANSIENT_KINDS[kind] then return true end
  return kind == "http" and TRANSIENT_STATUS[rawget(err, "status")] == true
end
M.transient = transient

-- flow.node(name, fn [, policy]) -> node; node(...) is flow.call(node, ...)
function M.node(name, fn, policy)
  if type(name) ~= "string" or name == "" then
    error("flow.node: name must be a non-empty string, got " .. type(name), 2)
  end
  if not check.callable.ok(fn) then
    error("flow.node: fn must be a function, got " .. type(fn), 2)
  end
  policy = check.options(POLICY, policy)
  local node = setmetatable({
    name = name, fn = fn,
    timeout = policy.timeout, retries = policy.retries or 0,
    backoff = policy.backoff or 0.5, max_backoff = policy.max_backoff or 30,
    retry_on = policy.retry_on or transient,
    capture = policy.capture ~= false, name_of = policy.name_of,
    concurrency = policy.concurrency,
  }, Node)
  if policy.concurrency then node._sem = sync.Semaphore(math.tointeger(policy.concurrency)) end
  if policy.rate then node._limiter = sync.RateLimiter(policy.rate) end
  return node
end

function Node:__call(...) return M.call(self, ...) end
function Node:__tostring() return "lasync.flow.Node '" .. self.name .. "'" end

local anonymous = setmetatable({}, { __mode = "k" })  -- fn -> its node

-- The node for x: x itself, or the anonymous node of a plain function.
local function node_of(x, level)
  if getmetatable(x) == Node then return x end
  if type(x) == "function" then
    local node = anonymous[x]
    if node == nil then
      local info = debug.getinfo(x, "S")
      local where = info.what == "C" and "C" or (info.short_src .. ":" .. info.linedefined)
      node = M.node("fn@" .. where, x)
      anonymous[x] = node
    end
    return node
  end
  error("flow: expected a node or a function, got " .. type(x), level + 1)
end

-- {====== records ======}

-- The fields of a call record (an array, for size).
local R_ID, R_PARENT, R_NODE, R_LABEL, R_ATTEMPT, R_STATUS, R_STARTED, R_ENDED, R_LANE,
      R_INPUT, R_OUTPUT, R_ERROR, R_TRACEBACK, R_METRICS, R_ATTEMPTS, R_RUN =
      1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
local FIELDS = { id = R_ID, parent = R_PARENT, node = R_NODE, label = R_LABEL,
                 attempt = R_ATTEMPT, status = R_STATUS, started = R_STARTED, ended = R_ENDED,
                 input = R_INPUT, output = R_OUTPUT, error = R_ERROR, traceback = R_TRACEBACK,
                 metrics = R_METRICS, attempts = R_ATTEMPTS }

local Record = { __name = "lasync.flow.Call" }
function Record.__index(r, k)
  local i = FIELDS[k]
  if i then
    local v = rawget(r, i)
    if v == false then return nil end  -- (false stands for nil in the array)
    return v
  end
  if k == "task" then  -- the name of the task that made the call
    local run, lane = rawget(r, R_RUN), rawget(r, R_LANE)
    return run and run._lanes[lane] and run._lanes[lane].name
  end
  if k == "duration" then
    local e = rawget(r, R_ENDED)
    return e and e - rawget(r, R_STARTED)
  end
  return nil
end

-- {====== runs ======}

local Run = {}
Run.__name = "lasync.flow.Run"
Run.__index = Run

local SESSION = check.spec("flow.session", {
  name = check.string, log = check.string, trace = check.string, report = check.string,
  progress = check.boolean, redact = check.names("key names"), preview_bytes = check.count,
  on_event = check.callable,
})

local DEFAULT_REDACT = { "authorization", "api_key", "apikey", "password", "token", "secret" }

local function new_id()
  return os.date("!%Y%m%dT%H%M%S") .. fmt("-%04x", math.random(0, 0xffff))
end

-- The lane (index in run._lanes) of the running task in this run.
local function lane_of(run)
  local t = current_task()
  local lanes = run._lane_of
  local lane = lanes[t or false]
  if lane == nil then
    lane = #run._lanes + 1
    run._lanes[lane] = { name = t and t:name() or "(no task)" }
    lanes[t or false] = lane
  end
  return lane
end

-- {------ the log and the on_event hook ------}

local function emit(run, ev)
  local on_event = run._on_event
  if on_event then
    local ok, err = pcall(on_event, ev)
    if not ok then warn("lasync.flow: on_event failed: ", safe_tostring(err)) end
  end
  local f = run._log
  if f then
    local parts = { "{" }
    local first = true
    for _, k in ipairs(ev._order) do
      local v = ev[k]
      if v ~= nil then
        local tv = type(v)
        local enc
        if tv == "string" then enc = jstr(v)
        elseif tv == "number" then enc = jnum(v)
        elseif tv == "boolean" then enc = tostring(v)
        elseif tv == "table" then  -- metrics: name -> number
          local m = {}
          for name, x in pairs(v) do m[#m + 1] = jstr(tostring(name)) .. ":" .. jnum(x) end
          sort(m)
          enc = "{" .. concat(m, ",") .. "}"
        end
        if enc then
          parts[#parts + 1] = (first and "" or ",") .. jstr(k) .. ":" .. enc
          first = false
        end
      end
    end
    parts[#parts + 1] = "}\n"
    local ok, err = pcall(function() f:write(concat(parts)); f:flush() end)
    if not ok then  -- a full disk must not fail the calls: say it once, then stop logging
      warn("lasync.flow: cannot write the log: ", safe_tostring(err))
      run._log = nil
    end
  end
end

local START_ORDER = { "event", "t", "id", "parent", "node", "label", "attempt", "task", "input" }
local RETRY_ORDER = { "event", "t", "id", "node", "attempt", "error", "delay" }
local FINISH_ORDER = { "event", "t", "id", "node", "status", "attempts", "duration", "error",
                       "output", "metrics" }

local function wants_events(run) return run._log ~= nil or run._on_event ~= nil end

-- {------ counters, for the progress line and the summary ------}

local function count(run, field, d) run._n[field] = run._n[field] + d end

-- {====== calls ======}

-- The message handler of an attempt: the error passes through unchanged; its traceback (not for
-- cancellations) is kept for the record (r.tb, taken before anything can await).
local last_traceback
local function attempt_msgh(e)
  if not async.is_cancelled(e) then
    last_traceback = traceback(type(e) == "string" and e or safe_tostring(e), 2)
  end
  return e
end

-- Acquires what the node's policy asks for before an attempt; returns nil, or the error (a
-- cancellation while waiting).
local function acquire(node)
  local limiter, sem = node._limiter, node._sem
  if limiter then
    local ok, err = pcall(limiter.acquire, limiter)
    if not ok then return err end
  end
  if sem then
    local ok, err = pcall(sem.acquire, sem)
    if not ok then return err end
  end
  return nil
end

-- One attempt: returns its outcome, packed pcall-style (never raises).
local function run_attempt(node, ...)
  local sem = node._sem
  if sem or node._limiter then
    local err = acquire(node)
    if err ~= nil then return { false, err, n = 2 } end
  end
  local r
  local t0 = now()  -- the attempt runs from here (its wait for a slot is not part of it)
  last_traceback = nil
  if node.timeout then
    r = pack(xpcall(async.timeout, attempt_msgh, node.timeout, node.fn, ...))
  else
    r = pack(xpcall(node.fn, attempt_msgh, ...))
  end
  if not r[1] then r.tb, last_traceback = last_traceback, nil end
  if sem then sem:release() end
  r.t0 = t0
  return r
end

local function backoff_delay(node, attempt, err)
  local after = type(err) == "table" and rawget(err, "retry_after")
  if type(after) == "number" and after >= 0 then return min(after, node.max_backoff) end
  local base = min(node.max_backoff, node.backoff * 2 ^ (attempt - 1))
  return base * (0.5 + math.random() * 0.5)
end

-- Runs node's attempts with its policy; rec (or nil outside a run) follows them. Returns the
-- packed pcall-style outcome of the last attempt (never raises).
local function attempts(node, rec, run, ...)
  local attempt = 0
  while true do
    attempt = attempt + 1
    if rec then rec[R_ATTEMPT] = attempt end
    local r = run_attempt(node, ...)
    if rec and rec[R_ATTEMPTS] then rec[R_ATTEMPTS].last = r.t0 end  -- the last attempt's start
    if r[1] then return r end
    local err = r[2]
    -- cancelled from outside (this task, or a scope around the call): never retried
    if core.cancelling() or attempt > node.retries then return r end
    local ok, retry = pcall(node.retry_on, err)
    if not (ok and retry) then return r end
    local delay = backoff_delay(node, attempt, err)
    if rec then
      local list = rec[R_ATTEMPTS]
      if not list then
        list = {}
        rec[R_ATTEMPTS] = list
      end
      list[#list + 1] = { r.t0, now(), async.is_timeout(err) and "timeout" or "error",
                          safe_tostring(err) }
      if attempt == 1 then count(run, "retried", 1) end
      if wants_events(run) then
        emit(run, { _order = RETRY_ORDER, event = "retry", t = now() - run.started,
                    id = rec[R_ID], node = node.name, attempt = attempt + 1,
                    error = safe_tostring(err), delay = delay })
      end
    end
    local slept, serr = pcall(sleep, delay)
    if not slept then return { false, serr, n = 2 } end  -- cancelled while waiting
  end
end

local function label_of(node, ...)
  local name_of = node.name_of
  if name_of == nil then return nil end
  local ok, s = pcall(name_of, ...)
  if ok then return s ~= nil and safe_tostring(s) or nil end
  return "<name_of failed: " .. safe_tostring(s) .. ">"
end

-- Finishes rec with the outcome r (packed, pcall style).
local function finish(run, rec, node, r)
  local ended = now()
  rec[R_ENDED] = ended
  local status
  if r[1] then
    status = "ok"
    if node.capture then
      rec[R_OUTPUT] = preview(r, 2, r.n, run._preview_bytes, run._redact)
    end
  else
    local err = r[2]
    if async.is_cancelled(err) then
      status = "cancelled"
    elseif async.is_timeout(err) then
      status = "timeout"
    else
      status = "error"
    end
    rec[R_ERROR] = safe_tostring(err)
    if status ~= "cancelled" then rec[R_TRACEBACK] = r.tb or false end
  end
  rec[R_STATUS] = status
  local counts = run._n
  counts.running = counts.running - 1
  counts.done = counts.done + 1
  if status ~= "ok" then counts.failed = counts.failed + 1 end
  if wants_events(run) then
    emit(run, { _order = FINISH_ORDER, event = "finish", t = ended - run.started,
                id = rec[R_ID], node = node.name, status = status, attempts = rec[R_ATTEMPT],
                duration = ended - rec[R_STARTED], error = rec[R_ERROR],
                output = rec[R_OUTPUT], metrics = rec[R_METRICS] })
  end
end

-- The run the running code records into, and the record of the call it runs in (or nil).
local function where()
  local cur = CURRENT:_raw()
  if cur == nil then return nil, nil end
  if getmetatable(cur) == Record then return rawget(cur, R_RUN), cur end
  return cur, nil  -- a Run: in a session's block
end

-- flow.call(node_or_fn, ...) -> the node's results: its policy applied, and recorded in the
-- run of the session the caller is in (if any).
function M.call(x, ...)
  local node = getmetatable(x) == Node and x or node_of(x, 2)
  local run, parent = where()
  if run == nil or run.ended then  -- outside a session: the policy, nothing recorded
    local r = attempts(node, nil, nil, ...)
    if r[1] then return unpack(r, 2, r.n) end
    error(r[2], 0)
  end
  local calls = run.calls
  local id = #calls + 1
  local started = now()
  local rec = setmetatable({ id, parent and parent[R_ID] or false, node.name,
                             label_of(node, ...) or false, 1, "running", started, false,
                             lane_of(run), false, false, false, false, false, false, run },
                           Record)
  if node.capture then
    local nargs = select("#", ...)
    if nargs == 1 then  -- (no table for the arguments in the usual case)
      rec[R_INPUT] = scalar((...), run._preview_bytes) or
                     preview(pack(...), 1, 1, run._preview_bytes, run._redact)
    else
      rec[R_INPUT] = preview(pack(...), 1, nargs, run._preview_bytes, run._redact)
    end
  end
  calls[id] = rec
  local counts = run._n
  counts.started = counts.started + 1
  counts.running = counts.running + 1
  if wants_events(run) then
    emit(run, { _order = START_ORDER, event = "start", t = started - run.started, id = id,
                parent = rec[R_PARENT] or nil, node = node.name, label = rec[R_LABEL] or nil,
                attempt = 1, task = run._lanes[rec[R_LANE]].name, input = rec[R_INPUT] or nil })
  end
  local prev, ctx = CURRENT:_enter(rec)
  local r = attempts(node, rec, run, ...)
  CURRENT:_exit(prev, ctx, parent or run)
  if rec[R_STATUS] == "running" then finish(run, rec, node, r) end
  if r[1] then return unpack(r, 2, r.n) end
  error(r[2], 0)
end

-- flow.current() -> the record of the call running in this task, or nil
function M.current()
  local _, rec = where()
  return rec
end

-- flow.metric(name, n): adds n to the metric of the current call (tokens, cost, bytes...)
function M.metric(name, n)
  if type(name) ~= "string" then error("flow.metric: name must be a string, got " .. type(name), 2) end
  if type(n) ~= "number" then error("flow.metric: n must be a number, got " .. type(n), 2) end
  local _, rec = where()
  if rec == nil then return end
  local m = rec[R_METRICS]
  if not m then
    m = {}
    rec[R_METRICS] = m
  end
  m[name] = (m[name] or 0) + n
end

-- {====== map and gather ======}

local MAP = check.spec("flow.map", { concurrency = check.count, return_errors = check.boolean })

-- flow.map(node_or_fn, list [, opts]) -> {n = #list, results...}: async.map of tracked calls
-- node(item)
function M.map(x, list, opts)
  local node = node_of(x, 2)
  if type(list) ~= "table" then error("flow.map: expected a list, got " .. type(list), 2) end
  opts = check.options(MAP, opts)
  local run = where()
  if run and not run.ended then run.total = (run.total or 0) + #list end
  return async.map(function(item) return M.call(node, item) end, list, opts)
end

-- flow.gather(...): async.gather, where a node (called without arguments) becomes a tracked
-- call; functions, Tasks and Futures are what they are for async.gather.
function M.gather(...)
  local n = select("#", ...)
  local first = ...
  local function wrap(x)
    if getmetatable(x) == Node then return function() return M.call(x) end end
    return x
  end
  if n >= 1 and n <= 2 and type(first) == "table" and getmetatable(first) == nil then
    local list = {}
    for i = 1, #first do list[i] = wrap(first[i]) end
    return async.gather(list, (select(2, ...)))
  end
  local args = pack(...)
  for i = 1, n do args[i] = wrap(args[i]) end
  return async.gather(unpack(args, 1, n))
end

-- {====== sessions ======}

local function open_log(path)
  local f, err = io.open(path, "w")
  if not f then error("flow.session: cannot open the log: " .. tostring(err), 4) end
  f:setvbuf("full")
  return f
end

-- {------ the progress line ------}

local function fmt_secs(s)
  if s >= 3600 then return fmt("%dh%02dm", s // 3600, (s % 3600) // 60) end
  if s >= 60 then return fmt("%dm%02ds", s // 60, floor(s % 60)) end
  return fmt("%.0fs", s)
end

local function progress_text(run)
  local n, t = run._n, now() - run.started
  local parts = { "flow " .. run.name .. ":" }
  if run.total and run.total > 0 then
    parts[#parts + 1] = fmt("%d/%d done", n.done, run.total)
  else
    parts[#parts + 1] = fmt("%d done", n.done)
  end
  parts[#parts + 1] = fmt("%d running", n.running)
  if n.failed > 0 then parts[#parts + 1] = fmt("%d failed", n.failed) end
  if n.retried > 0 then parts[#parts + 1] = fmt("%d retried", n.retried) end
  local rate = t > 0 and n.done / t or 0
  parts[#parts + 1] = fmt("%.1f calls/s", rate)
  if run.total and run.total > n.done and rate > 0 then
    parts[#parts + 1] = "ETA " .. fmt_secs((run.total - n.done) / rate)
  end
  return concat(parts, "  ")
end
M._progress_text = progress_text

local function progress_loop(run)
  local out = run._progress_out or io.stderr
  while true do
    out:write("\r", progress_text(run), "\27[K")
    out:flush()
    sleep(0.1)  -- at most 10 redraws a second
  end
end

-- flow.print(...): print, without garbling the progress line of the current run (the line is
-- cleared first, and drawn again after)
function M.print(...)
  local run = where()
  local out = run and run._progress and (run._progress_out or io.stderr)
  if out then out:write("\r\27[K") end
  print(...)
  io.stdout:flush()
  if out then
    out:write("\r", progress_text(run), "\27[K")
    out:flush()
  end
end

local function stop_progress(run)
  local t = run._progress
  if t == nil then return end
  run._progress = nil
  t:cancel("flow: the run ended")
  async.shielded(pcall, t.await, t)
  local out = run._progress_out or io.stderr
  out:write("\r\27[K")  -- leaves the terminal clean
  out:flush()
end

-- flow.session(opts) -> Run: every call made while the block runs (by this task and the tasks it
-- spawns) is recorded; leaving the block finalises the run
function M.session(opts)
  opts = check.options(SESSION, opts)
  if current_task() == nil then error("flow.session: must be called from a task", 2) end
  local redact = {}
  for _, k in ipairs(DEFAULT_REDACT) do redact[k] = true end
  if opts.redact then
    redact = {}
    for k in pairs(check.to_set(opts.redact)) do redact[k:lower()] = true end
  end
  local run = setmetatable({
    id = new_id(), name = opts.name or "run", status = "running", calls = {},
    started = now(), started_at = os.time(), ended = nil, total = nil,
    result = nil, error = nil,
    _n = { started = 0, running = 0, done = 0, failed = 0, retried = 0 },
    _lanes = {}, _lane_of = setmetatable({}, { __mode = "k" }),
    _redact = redact, _preview_bytes = math.tointeger(opts.preview_bytes) or 200,
    _on_event = opts.on_event,
    _trace = opts.trace, _report = opts.report,
  }, Run)
  if opts.log then run._log = open_log(opts.log) end
  local progress = opts.progress
  if progress == nil then progress = core.isatty(2) end
  run._outer = CURRENT:_raw()
  run._prev_ctx, run._ctx = CURRENT:_enter(run)  -- calls in the block: this run, no parent
  run._task = current_task()
  if wants_events(run) then
    emit(run, { _order = { "event", "run", "name", "started_at" }, event = "run_start",
                run = run.id, name = run.name, started_at = run.started_at })
  end
  if progress then
    run._progress = core.spawn(progress_loop, run)
    run._progress:set_name("flow progress")
  end
  return run
end

local function finalize(run, err)
  if run.ended then return end
  run.ended = now()
  stop_progress(run)
  local status = "ok"
  if err ~= nil then
    status = async.is_cancelled(err) and "cancelled" or "error"
    run.error = err
  end
  run.status = status
  if status == "cancelled" then  -- calls still running were cancelled with the run
    for _, rec in ipairs(run.calls) do
      if rec[R_STATUS] == "running" then
        rec[R_STATUS], rec[R_ENDED], rec[R_ERROR] = "cancelled", run.ended, "the run was cancelled"
      end
    end
  end
  if current_task() == run._task then CURRENT:_exit(run._prev_ctx, run._ctx, run._outer) end
  if wants_events(run) then
    emit(run, { _order = { "event", "t", "run", "status", "calls", "error" }, event = "run_end",
                t = run.ended - run.started, run = run.id, status = status, calls = #run.calls,
                error = err ~= nil and safe_tostring(err) or nil })
  end
  if run._log then
    pcall(run._log.close, run._log)
    run._log = nil
  end
  if run._trace then run:save_trace(run._trace) end
  if run._report then run:save_report(run._report) end
end

function Run:__close(err)
  finalize(self, err)
end

-- run:close([err]): finalises the run (what leaving the session's block does)
function Run:close(err)
  finalize(self, err)
end

local RUN_WITH = SESSION

local function run_body(opts, x, ...)
  local run = M.session(opts)
  local r = pack(pcall(M.call, x, ...))
  if r[1] then
    run.result = pack(unpack(r, 2, r.n))
    finalize(run, nil)
  else
    finalize(run, r[2])
    if core.cancelling() then error(r[2], 0) end  -- this task was cancelled: unwind
  end
  return run
end

-- flow.run_with(opts, node_or_fn, ...) -> Run: a session around one call (as the main task of
-- async.run when no loop is running). The call's error does not propagate: it is run.error.
function M.run_with(opts, x, ...)
  opts = check.options(RUN_WITH, opts)
  node_of(x, 2)
  if not core.running() then return async.run(run_body, opts, x, ...) end
  return run_body(opts, x, ...)
end

-- flow.run(node_or_fn, ...) -> Run: flow.run_with with default options
function M.run(x, ...)
  node_of(x, 2)
  if not core.running() then return async.run(run_body, check.EMPTY, x, ...) end
  return run_body(check.EMPTY, x, ...)
end

-- {====== the summary ======}

local function percentile(sorted, p)
  local n = #sorted
  if n == 0 then return nil end
  local i = math.max(1, math.ceil(p * n))
  return sorted[i]
end

-- run:stats() -> {{node =, calls =, ok =, failed =, retried =, p50 =, p95 =, max =, busy =,
-- metrics = {name = sum}}, ...} by node, in order of first call
function Run:stats()
  local by, order = {}, {}
  for _, rec in ipairs(self.calls) do
    local name = rec[R_NODE]
    local s = by[name]
    if s == nil then
      s = { node = name, calls = 0, ok = 0, failed = 0, retried = 0, busy = 0, metrics = {},
            _d = {} }
      by[name] = s
      order[#order + 1] = s
    end
    s.calls = s.calls + 1
    local st = rec[R_STATUS]
    if st == "ok" then s.ok = s.ok + 1 elseif st ~= "running" then s.failed = s.failed + 1 end
    if rec[R_ATTEMPTS] then s.retried = s.retried + 1 end
    local e = rec[R_ENDED]
    if e then
      local d = e - rec[R_STARTED]
      s._d[#s._d + 1] = d
      s.busy = s.busy + d
    end
    local m = rec[R_METRICS]
    if m then
      for k, v in pairs(m) do s.metrics[k] = (s.metrics[k] or 0) + v end
    end
  end
  for _, s in ipairs(order) do
    sort(s._d)
    s.p50, s.p95, s.max = percentile(s._d, 0.5), percentile(s._d, 0.95), s._d[#s._d]
    s._d = nil
  end
  return order
end

local function fmt_dur(d)
  if d == nil then return "-" end
  if d < 0.001 then return fmt("%.0fus", d * 1e6) end
  if d < 0.01 then return fmt("%.1fms", d * 1000) end
  if d < 1 then return fmt("%.0fms", d * 1000) end
  return fmt("%.2fs", d)
end

local function fmt_metric(v)
  if math.type(v) == "integer" or v == floor(v) then return fmt("%d", v) end
  return fmt("%.4g", v)
end

-- run:summary() -> a text table by node: calls, ok, failed, retried, p50/p95/max, busy time and
-- the summed metrics
function Run:summary()
  local stats = self:stats()
  local mnames, seen = {}, {}
  for _, s in ipairs(stats) do
    for k in pairs(s.metrics) do
      if not seen[k] then seen[k] = true; mnames[#mnames + 1] = k end
    end
  end
  sort(mnames)
  local head = { "node", "calls", "ok", "failed", "retried", "p50", "p95", "max", "busy" }
  for _, k in ipairs(mnames) do head[#head + 1] = k end
  local rows = { head }
  for _, s in ipairs(stats) do
    local row = { s.node, tostring(s.calls), tostring(s.ok), tostring(s.failed),
                  tostring(s.retried), fmt_dur(s.p50), fmt_dur(s.p95), fmt_dur(s.max),
                  fmt_dur(s.busy) }
    for _, k in ipairs(mnames) do
      row[#row + 1] = s.metrics[k] and fmt_metric(s.metrics[k]) or "-"
    end
    rows[#rows + 1] = row
  end
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do widths[i] = max(widths[i] or 0, #cell) end
  end
  local lines = {}
  for r, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do
      local w = widths[i]
      cells[i] = i == 1 and (cell .. (" "):rep(w - #cell)) or ((" "):rep(w - #cell) .. cell)
    end
    lines[r] = concat(cells, "  ")
  end
  local n = self._n
  local took = fmt_dur((self.ended or now()) - self.started)
  lines[#lines + 1] = fmt("%d calls, %d failed, %d retried; run '%s' %s", #self.calls,
                          n.failed, n.retried, self.name, self.ended and
                          ("took " .. took .. " (" .. self.status .. ")") or
                          ("running for " .. took))
  return concat(lines, "\n") .. "\n"
end

-- {====== the trace (Chrome Trace Event Format) ======}

local function write_file(path, chunks, what)
  local f, err = io.open(path, "w")
  if not f then error(what .. ": cannot write " .. path .. ": " .. tostring(err), 3) end
  for i = 1, #chunks do f:write(chunks[i]) end
  f:close()
end

local function us(run, t) return fmt("%.3f", (t - run.started) * 1e6) end

-- run:trace_events() -> the trace as a list of JSON texts, one event each
function Run:trace_events()
  local out = {}
  local pid = 1
  out[#out + 1] = fmt('{"ph":"M","name":"process_name","pid":%d,"tid":0,"args":{"name":%s}}',
                      pid, jstr("lasync flow " .. self.name))
  for lane, l in ipairs(self._lanes) do
    out[#out + 1] = fmt('{"ph":"M","name":"thread_name","pid":%d,"tid":%d,"args":{"name":%s}}',
                        pid, lane, jstr(l.name))
  end
  local names = {}  -- node name -> its JSON text
  local ended = self.ended or now()
  local calls = self.calls
  for i = 1, #calls do
    local rec = calls[i]
    local node = rec[R_NODE]
    local jname = names[node]
    if jname == nil then
      jname = jstr(node)
      names[node] = jname
    end
    local lane = rec[R_LANE]
    local args = { '"id":' .. rec[R_ID] }
    if rec[R_PARENT] then args[#args + 1] = '"parent":' .. rec[R_PARENT] end
    if rec[R_LABEL] then args[#args + 1] = '"label":' .. jstr(rec[R_LABEL]) end
    if rec[R_INPUT] then args[#args + 1] = '"input":' .. jstr(rec[R_INPUT]) end
    local tries = rec[R_ATTEMPTS]
    local last_start = rec[R_STARTED]
    if tries then  -- one event per attempt
      for a, at in ipairs(tries) do
        out[#out + 1] = fmt('{"name":%s,"cat":"node","ph":"X","ts":%s,"dur":%s,"pid":%d,' ..
          '"tid":%d,"args":{%s,"attempt":%d,"status":%s,"error":%s}}', jname, us(self, at[1]),
          fmt("%.3f", (at[2] - at[1]) * 1e6), pid, lane, concat(args, ","), a, jstr(at[3]),
          jstr(at[4]))
      end
      last_start = tries.last or tries[#tries][2]
    end
    local e = rec[R_ENDED] or ended
    local fargs = { concat(args, ","), '"attempt":' .. rec[R_ATTEMPT],
                    '"status":' .. jstr(rec[R_STATUS]) }
    if rec[R_OUTPUT] then fargs[#fargs + 1] = '"output":' .. jstr(rec[R_OUTPUT]) end
    if rec[R_ERROR] then fargs[#fargs + 1] = '"error":' .. jstr(rec[R_ERROR]) end
    local m = rec[R_METRICS]
    if m then
      for k, v in pairs(m) do fargs[#fargs + 1] = jstr("metric." .. k) .. ":" .. jnum(v) end
    end
    out[#out + 1] = fmt('{"name":%s,"cat":"node","ph":"X","ts":%s,"dur":%s,"pid":%d,"tid":%d,' ..
      '"args":{%s}}', jname, us(self, last_start), fmt("%.3f", max(0, e - last_start) * 1e6),
      pid, lane, concat(fargs, ","))
    local parent = rec[R_PARENT] and calls[rec[R_PARENT]]
    if parent and parent[R_LANE] ~= lane then  -- an arrow from the parent's lane to the child
      local ts = us(self, rec[R_STARTED])
      out[#out + 1] = fmt('{"name":"call","cat":"flow","ph":"s","id":%d,"ts":%s,"pid":%d,' ..
                          '"tid":%d}', rec[R_ID], ts, pid, parent[R_LANE])
      out[#out + 1] = fmt('{"name":"call","cat":"flow","ph":"f","bp":"e","id":%d,"ts":%s,' ..
                          '"pid":%d,"tid":%d}', rec[R_ID], ts, pid, lane)
    end
  end
  return out
end

-- run:save_trace(path): the trace as Chrome Trace Event Format JSON, for Perfetto
-- (ui.perfetto.dev) and chrome://tracing
function Run:save_trace(path)
  if type(path) ~= "string" then error("run:save_trace: path must be a string", 2) end
  local events = self:trace_events()
  local chunks = { '{"displayTimeUnit":"ms","otherData":{"run":', jstr(self.id), ',"name":',
                   jstr(self.name), ',"status":', jstr(self.status), '},"traceEvents":[\n' }
  for i = 1, #events do
    chunks[#chunks + 1] = events[i]
    chunks[#chunks + 1] = i < #events and ",\n" or "\n"
  end
  chunks[#chunks + 1] = "]}\n"
  write_file(path, chunks, "run:save_trace")
end

-- run:save_report(path): the self-contained HTML report (lasync.flow_report)
function Run:save_report(path)
  if type(path) ~= "string" then error("run:save_report: path must be a string", 2) end
  write_file(path, require("lasync.flow_report").render(self, {
    R_ID = R_ID, R_PARENT = R_PARENT, R_NODE = R_NODE, R_LABEL = R_LABEL,
    R_ATTEMPT = R_ATTEMPT, R_STATUS = R_STATUS, R_STARTED = R_STARTED, R_ENDED = R_ENDED,
    R_LANE = R_LANE, R_INPUT = R_INPUT, R_OUTPUT = R_OUTPUT, R_ERROR = R_ERROR,
    R_TRACEBACK = R_TRACEBACK, R_METRICS = R_METRICS, R_ATTEMPTS = R_ATTEMPTS,
  }, jstr, jnum), "run:save_report")
end

function Run:__tostring()
  return fmt("lasync.flow.Run '%s' (%s, %d calls)", self.name, self.status, #self.calls)
end

-- {====== workers (the AsyncWorker pattern) ======}

local Worker = {}
Worker.__index = Worker
Worker.__name = "lasync.flow.Worker"

local Job = {}
Job.__index = Job
Job.__name = "lasync.flow.Job"

local WORKER = check.spec("flow.worker", { concurrency = check.count, name = check.string })
local JOIN = check.spec("w:join", { return_errors = check.boolean })

-- flow.worker{concurrency = n [, name =]} -> w
function M.worker(opts)
  if type(opts) ~= "table" then
    error("flow.worker: expected an options table {concurrency = n}, got " .. type(opts), 2)
  end
  opts = check.options(WORKER, opts)
  if opts.concurrency == nil then error("flow.worker: option 'concurrency' is missing", 2) end
  return setmetatable({ name = opts.name or "worker", _sem = sync.Semaphore(
    math.tointeger(opts.concurrency)), _jobs = {}, _closed = false,
    _n = { pending = 0, running = 0, done = 0, failed = 0, cancelled = 0 } }, Worker)
end

local function job_body(w, job, node, ...)
  local n = w._n
  local ok, r = pcall(w._sem.acquire, w._sem)
  if not ok then  -- cancelled while pending
    n.pending = n.pending - 1
    n.cancelled = n.cancelled + 1
    job._status = "cancelled"
    error(r, 0)
  end
  n.pending, n.running = n.pending - 1, n.running + 1
  job._status = "running"
  local res = pack(pcall(M.call, node, ...))
  w._sem:release()
  n.running = n.running - 1
  if res[1] then
    n.done = n.done + 1
    job._status = "done"
    return unpack(res, 2, res.n)
  end
  if async.is_cancelled(res[2]) then
    n.cancelled = n.cancelled + 1
    job._status = "cancelled"
  else
    n.failed = n.failed + 1
    job._status = "failed"
  end
  error(res[2], 0)
end

-- w:submit(node_or_fn, ...) -> Job
function Worker:submit(x, ...)
  if getmetatable(self) ~= Worker then error("Worker:submit: call it as w:submit(fn, ...)", 2) end
  if self._closed then error("w:submit: the worker is closed", 2) end
  local node = node_of(x, 2)
  local job = setmetatable({ _status = "pending", worker = self }, Job)
  self._n.pending = self._n.pending + 1
  job.task = core.spawn_from(2, job_body, self, job, node, ...)
  job.task:set_name(self.name .. " job " .. (#self._jobs + 1))
  self._jobs[#self._jobs + 1] = job
  return job
end

-- job:status() -> "pending" | "running" | "done" | "failed" | "cancelled"
function Job:status() return self._status end
function Job:await() return self.task:await() end
function Job:result() return self.task:result() end
function Job:error() return self.task:error() end
function Job:done() return self.task:done() end
function Job:cancel(msg)
  local ok = self.task:cancel(msg)
  if ok and self._status == "pending" then self._status = "cancelled" end  -- it never starts
  return ok
end

-- w:stats() -> {pending =, running =, done =, failed =, cancelled =}
function Worker:stats()
  local n = self._n
  return { pending = n.pending, running = n.running, done = n.done, failed = n.failed,
           cancelled = n.cancelled }
end

-- w:is_finished() -> true when no job is pending or running
function Worker:is_finished()
  return self._n.pending == 0 and self._n.running == 0
end

-- w:join([{return_errors = true}]) -> {n =, job results...}: waits for every job (also those
-- submitted meanwhile); raises the first failure (in submission order) unless return_errors
function Worker:join(opts)
  opts = check.options(JOIN, opts)
  local results = {}
  local i = 0
  while i < #self._jobs do
    i = i + 1
    local t = self._jobs[i].task
    local ok, v = pcall(t.await, t)
    if ok then
      results[i] = v
    elseif core.cancelling() then
      error(v, 0)  -- the joining task itself was cancelled
    elseif opts.return_errors then
      results[i] = v
    else
      for j = i + 1, #self._jobs do  -- the others are observed: no "never retrieved" warnings
        local tj = self._jobs[j].task
        pcall(tj.await, tj)
      end
      error(v, 0)
    end
  end
  results.n = i
  return results
end

-- w:close(): pending jobs are cancelled, running ones awaited; also w's <close>
function Worker:close()
  self._closed = true
  for _, job in ipairs(self._jobs) do
    if job._status == "pending" then job:cancel("flow.worker: closed") end
  end
  for _, job in ipairs(self._jobs) do
    local t = job.task
    if not t:done() then pcall(t.await, t) end
    if t:cancelled() or t:error() ~= nil then pcall(t.result, t) end  -- observed
  end
end
Worker.__close = Worker.close

function Worker:__tostring()
  local n = self._n
  return fmt("lasync.flow.Worker '%s' (%d pending, %d running)", self.name, n.pending, n.running)
end

return M
