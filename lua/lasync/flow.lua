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

-- Where a call in this task is recorded: the Run of the session around, and the id of the call
-- running (0 in the session's block itself: no parent).
local RUNVAR = ContextVar("lasync.flow.run")
local CURRENT = ContextVar("lasync.flow.current")

-- {====== JSON strings and previews ======}

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
              ["\r"] = "\\r", ["\t"] = "\\t" }
local function esc_char(c) return ESC[c] or fmt("\\u%04x", c:byte()) end

-- s as a JSON string (s is valid UTF-8 or not: bytes >= 0x80 pass through, browsers cope)
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', esc_char) .. '"'
end

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
-- A scalar's preview, or nil. A number is its own preview (tostring is slow: previews of
-- numbers are made text when they are read, by ptext).
local function scalar(v, limit)
  local t = type(v)
  if t == "number" then return v end
  if t == "boolean" or t == "nil" then return tostring(v) end
  if t == "string" and #v <= limit - 2 and not v:find('[%c"\\]') then return '"' .. v .. '"' end
  return nil
end

local function preview(vals, first, last, limit, redact)
  if last < first then return "" end
  if last - first <= 1 then  -- one or two plain values: no tables to walk (the usual case)
    local a = scalar(vals[first], limit)
    if a and last == first + 1 then
      local b = scalar(vals[last], limit)
      if b then
        local s = tostring(a) .. ", " .. tostring(b)
        if #s <= limit then return s end
      end
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

-- The text of a stored preview (a string, or a number kept as it is).
local function ptext(p)
  if p == nil or p == false then return nil end
  return type(p) == "string" and p or tostring(p)
end

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
    name = name, fn = fn, _json = jstr(name),
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

-- A run keeps its calls' records as columns, run._c[R_FIELD][id], not as a table per call: a
-- recorded call costs a few array slots, and the collector has no object per call to sweep.
-- run.calls (and flow.current) give views of them.
local R_PARENT, R_NODE, R_LABEL, R_ATTEMPT, R_STATUS, R_STARTED, R_ENDED, R_LANE, R_INPUT,
      R_OUTPUT, R_ERROR, R_TRACEBACK, R_METRICS, R_ATTEMPTS = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
      11, 12, 13, 14
local NCOLUMNS = 14
local FIELDS = { parent = R_PARENT, node = R_NODE, label = R_LABEL, attempt = R_ATTEMPT,
                 status = R_STATUS, started = R_STARTED, ended = R_ENDED, input = R_INPUT,
                 output = R_OUTPUT, error = R_ERROR, traceback = R_TRACEBACK,
                 metrics = R_METRICS, attempts = R_ATTEMPTS }

local Record = { __name = "lasync.flow.Call" }
function Record.__index(r, k)
  local run, id = rawget(r, "_run"), rawget(r, "id")
  local i = FIELDS[k]
  if i then
    local v = run._c[i][id]
    if v == false then return nil end  -- (false stands for nil in the dense columns)
    if (i == R_INPUT or i == R_OUTPUT) and type(v) == "number" then return tostring(v) end
    return v
  end
  if k == "task" then  -- the name of the task that made the call
    local l = run._lanes[run._c[R_LANE][id]]
    return l and l.name
  end
  if k == "duration" then
    local e = run._c[R_ENDED][id]
    return e and e - run._c[R_STARTED][id]
  end
  return nil
end
function Record.__eq(a, b) return rawget(a, "_run") == rawget(b, "_run") and a.id == b.id end

local function view(run, id) return setmetatable({ _run = run, id = id }, Record) end

-- run.calls: the records in order, as views (#run.calls, run.calls[id], ipairs)
local function calls_proxy(run)
  return setmetatable({}, {
    __name = "lasync.flow.Calls",
    __len = function() return run._ncalls end,
    __index = function(_, id)
      if math.type(id) == "integer" and id >= 1 and id <= run._ncalls then return view(run, id) end
      return nil
    end,
    __newindex = function() error("run.calls is read-only", 2) end,
  })
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
local current_id = core.current_id
local function lane_of(run)
  local id = current_id() or 0
  local lanes = run._lane_of
  local lane = lanes[id]
  if lane == nil then
    local t = current_task()
    lane = #run._lanes + 1
    run._lanes[lane] = { name = t and t:name() or "(no task)" }
    lanes[id] = lane
  end
  return lane
end

-- {------ the log and the on_event hook ------}

-- The log's lines are written and flushed at every turn of the scheduler (once the running
-- task suspends), or every LOG_BATCH lines: a crash keeps what happened until its moment,
-- without a system call per line.
local LOG_BATCH = 256

local function log_flush(run)
  local f, buf, n = run._log, run._logbuf, run._logn
  run._logn = 0
  if f == nil or n == 0 then return end
  local ok, err = pcall(f.write, f, concat(buf, "", 1, n))
  if ok then ok, err = pcall(f.flush, f) end
  for i = 1, n do buf[i] = nil end
  if not ok then  -- a full disk must not fail the calls: say it once, then stop logging
    warn("lasync.flow: cannot write the log: ", safe_tostring(err))
    run._log = nil
  end
end

local function log_write(run, line)
  local n = run._logn + 1
  run._logbuf[n] = line
  run._logn = n
  if n >= LOG_BATCH then
    log_flush(run)
  elseif n == 1 then  -- the first line of this turn: flush when the running task suspends
    core.spawn(log_flush, run)
  end
end

local function call_hook(run, ev)
  local ok, err = pcall(run._on_event, ev)
  if not ok then warn("lasync.flow: on_event failed: ", safe_tostring(err)) end
end

local function metrics_json(m)
  local list = {}
  for name, x in pairs(m) do list[#list + 1] = jstr(tostring(name)) .. ":" .. jnum(x) end
  sort(list)
  return "{" .. concat(list, ",") .. "}"
end

-- ',"key":<json>' for a string or number value, "" for nil/false
local function opt_str(key, v) return v and (',"' .. key .. '":' .. jstr(v)) or "" end

-- What lasync.flow_report needs of this module: the record columns (run._c[R_*]) and the JSON
-- encoders.
local FOR_REPORT = {
  R_PARENT = R_PARENT, R_NODE = R_NODE, R_LABEL = R_LABEL, R_ATTEMPT = R_ATTEMPT,
  R_STATUS = R_STATUS, R_STARTED = R_STARTED, R_ENDED = R_ENDED, R_LANE = R_LANE,
  R_INPUT = R_INPUT, R_OUTPUT = R_OUTPUT, R_ERROR = R_ERROR, R_TRACEBACK = R_TRACEBACK,
  R_METRICS = R_METRICS, R_ATTEMPTS = R_ATTEMPTS,
  jstr = jstr, jnum = jnum, metrics_json = metrics_json, safe_tostring = safe_tostring,
}

local function event_start(run, id, node)
  local C = run._c
  local t = C[R_STARTED][id] - run.started
  local parent, label, input = C[R_PARENT][id], C[R_LABEL][id], ptext(C[R_INPUT][id])
  local lane = run._lanes[C[R_LANE][id]]
  if run._on_event then
    call_hook(run, { event = "start", t = t, id = id, parent = parent or nil, node = node.name,
                     label = label or nil, attempt = 1, task = lane.name, input = input })
  end
  if run._log then
    lane.json = lane.json or jstr(lane.name)
    log_write(run, fmt('{"event":"start","t":%.6f,"id":%d%s,"node":%s%s,"attempt":1,' ..
      '"task":%s%s}\n', t, id, parent and (',"parent":' .. parent) or "", node._json,
      opt_str("label", label), lane.json, opt_str("input", input)))
  end
end

local function event_retry(run, id, node, attempt, err, delay)
  local t = now() - run.started
  if run._on_event then
    call_hook(run, { event = "retry", t = t, id = id, node = node.name, attempt = attempt,
                     error = err, delay = delay })
  end
  if run._log then
    log_write(run, fmt('{"event":"retry","t":%.6f,"id":%d,"node":%s,"attempt":%d,' ..
      '"error":%s,"delay":%.6f}\n', t, id, node._json, attempt, jstr(err), delay))
  end
end

local function event_finish(run, id, node)
  local C = run._c
  local ended = C[R_ENDED][id]
  local t, d = ended - run.started, ended - C[R_STARTED][id]
  local status, attempt, err, output, m = C[R_STATUS][id], C[R_ATTEMPT][id], C[R_ERROR][id],
    ptext(C[R_OUTPUT][id]), C[R_METRICS][id]
  if run._on_event then
    call_hook(run, { event = "finish", t = t, id = id, node = node.name, status = status,
                     attempts = attempt, duration = d, error = err, output = output,
                     metrics = m })
  end
  if run._log then
    log_write(run, fmt('{"event":"finish","t":%.6f,"id":%d,"node":%s,"status":"%s",' ..
      '"attempts":%d,"duration":%.6f%s%s%s}\n', t, id, node._json, status, attempt, d,
      opt_str("error", err), opt_str("output", output),
      m and (',"metrics":' .. metrics_json(m)) or ""))
  end
end

local function event_run(run, ev, line)
  if run._on_event then call_hook(run, ev) end
  if run._log then log_write(run, line) end
end

local function wants_events(run) return run._log ~= nil or run._on_event ~= nil end

-- {====== calls ======}

-- A traceback from `level` up (as debug.traceback's, without its search of package.loaded
-- for the names of global functions, which costs a hundred times more: a retried call may
-- fail many times).
local getinfo = debug.getinfo
local function quick_traceback(msg, level)
  local lines = { msg, "stack traceback:" }
  for l = level + 1, level + 40 do
    local info = getinfo(l, "Sln")
    if info == nil then break end
    local where = info.what == "C" and "[C]" or (info.short_src .. ":" .. (info.currentline or 0))
    local what = info.name and ("in " .. (info.namewhat ~= "" and info.namewhat or "function")
                                .. " '" .. info.name .. "'")
                 or (info.what == "main" and "in main chunk")
                 or (info.what == "C" and "in ?")
                 or ("in function <" .. info.short_src .. ":" .. info.linedefined .. ">")
    lines[#lines + 1] = "\t" .. where .. ": " .. what
  end
  return concat(lines, "\n")
end

-- The message handler of an attempt: the error passes through unchanged; its traceback (not for
-- cancellations) is kept for the record (r.tb, taken before anything can await).
local last_traceback
local function attempt_msgh(e)
  if not async.is_cancelled(e) then
    last_traceback = quick_traceback(type(e) == "string" and e or safe_tostring(e), 2)
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

-- Runs node's attempts with its policy; the call id of run (or nil outside a run) follows them.
-- Returns the packed pcall-style outcome of the last attempt (never raises).
local function attempts(node, run, id, ...)
  local attempt = 0
  local C = run and run._c
  while true do
    attempt = attempt + 1
    if C then C[R_ATTEMPT][id] = attempt end
    local r = run_attempt(node, ...)
    local list = C and C[R_ATTEMPTS][id]
    if list then list.last = r.t0 end  -- the last attempt's start
    if r[1] then return r end
    local err = r[2]
    -- cancelled from outside (this task, or a scope around the call): never retried
    if core.cancelling() or attempt > node.retries then return r end
    local ok, retry = pcall(node.retry_on, err)
    if not (ok and retry) then return r end
    local delay = backoff_delay(node, attempt, err)
    if C then
      if not list then
        list = {}
        C[R_ATTEMPTS][id] = list
        run._n.retried = run._n.retried + 1
      end
      list[#list + 1] = { r.t0, now(), async.is_timeout(err) and "timeout" or "error",
                          safe_tostring(err) }
      if run._log or run._on_event then event_retry(run, id, node, attempt + 1, list[#list][4],
                                                    delay) end
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

-- Finishes call id: status from the outcome (ok, or the error err with its traceback tb).
local function finish(run, id, node, ok, err, tb)
  local C = run._c
  C[R_ENDED][id] = now()
  local counts = run._n
  counts.done = counts.done + 1  -- (running = started - done: run._ncalls - done)
  if ok then
    C[R_STATUS][id] = "ok"
  else
    local status
    if async.is_cancelled(err) then
      status = "cancelled"
    elseif async.is_timeout(err) then
      status = "timeout"
    else
      status = "error"
    end
    C[R_STATUS][id] = status
    C[R_ERROR][id] = safe_tostring(err)
    if status ~= "cancelled" then C[R_TRACEBACK][id] = tb end
    counts.failed = counts.failed + 1
  end
  if run._log or run._on_event then event_finish(run, id, node) end
end

local function output_of(run, node, id, ...)
  if not node.capture then return end
  local n, v = select("#", ...), ...
  run._c[R_OUTPUT][id] = n == 1 and (type(v) == "number" and v or scalar(v, run._preview_bytes))
                         or preview(pack(...), 1, n, run._preview_bytes, run._redact)
end

-- Where the running code records: its run and the id of the call it runs in (0: none), read
-- from the context (flow never sets these variables to nil).
local get_context, context_enter, context_leave = core.context, core.context_enter,
  core.context_leave
local function where()
  local ctx = get_context()
  if ctx == nil then return nil, 0 end
  return ctx[RUNVAR], ctx[CURRENT] or 0
end

-- The end of a single-attempt call: ok, ... is xpcall's outcome.
local function settle(run, id, node, prev, ctx, parent, ok, ...)
  local tb = last_traceback
  last_traceback = nil
  if node._sem then node._sem:release() end
  if not context_leave(prev, ctx) then CURRENT:_exit(prev, ctx, parent) end
  if ok then
    if node.capture then
      local v = ...
      if type(v) == "number" and select("#", ...) == 1 then
        run._c[R_OUTPUT][id] = v
      else
        output_of(run, node, id, ...)
      end
    end
    if run._log or run._on_event then
      finish(run, id, node, true)
    else  -- (finish, inline: the usual case)
      local C = run._c
      C[R_ENDED][id], C[R_STATUS][id] = now(), "ok"
      local counts = run._n
      counts.done = counts.done + 1
    end
    return ...
  end
  local err = ...
  finish(run, id, node, false, err, tb)
  error(err, 0)
end

-- flow.call(node_or_fn, ...) -> the node's results: its policy applied, and recorded in the
-- run of the session the caller is in (if any).
function M.call(x, ...)
  local node = getmetatable(x) == Node and x or node_of(x, 2)
  local run, parent = where()
  local single = node.retries == 0 and not node.timeout
  if run == nil or run.ended then  -- outside a session: the policy, nothing recorded
    if single and not (node._sem or node._limiter) then return node.fn(...) end
    local r = attempts(node, nil, nil, ...)
    if r[1] then return unpack(r, 2, r.n) end
    error(r[2], 0)
  end
  local id = run._ncalls + 1
  run._ncalls = id
  local C = run._c
  -- every dense column gets a value (false for none): their arrays stay arrays
  C[R_PARENT][id] = parent > 0 and parent or false
  C[R_NODE][id] = node.name
  C[R_LABEL][id] = node.name_of and label_of(node, ...) or false
  C[R_ATTEMPT][id] = 1
  C[R_STATUS][id] = "running"
  C[R_STARTED][id] = now()
  C[R_ENDED][id] = false
  C[R_LANE][id] = lane_of(run)
  local input = false
  if node.capture then
    local nargs, v = select("#", ...), ...
    if nargs == 1 then
      input = type(v) == "number" and v or scalar(v, run._preview_bytes) or
              preview(pack(...), 1, 1, run._preview_bytes, run._redact)
    else
      input = preview(pack(...), 1, nargs, run._preview_bytes, run._redact)
    end
  end
  C[R_INPUT][id] = input
  C[R_OUTPUT][id] = false
  if run._log or run._on_event then event_start(run, id, node) end
  local prev, ctx = context_enter(CURRENT, id)
  if single then  -- one attempt: no tables for the outcome
    if node._sem or node._limiter then
      local err = acquire(node)
      if err ~= nil then
        if not context_leave(prev, ctx) then CURRENT:_exit(prev, ctx, parent) end
        finish(run, id, node, false, err)
        error(err, 0)
      end
    end
    last_traceback = nil
    return settle(run, id, node, prev, ctx, parent, xpcall(node.fn, attempt_msgh, ...))
  end
  local r = attempts(node, run, id, ...)
  if not context_leave(prev, ctx) then CURRENT:_exit(prev, ctx, parent) end
  if r[1] then
    output_of(run, node, id, unpack(r, 2, r.n))
    finish(run, id, node, true)
    return unpack(r, 2, r.n)
  end
  finish(run, id, node, false, r[2], r.tb)
  error(r[2], 0)
end

-- flow.current() -> the record of the call running in this task, or nil
function M.current()
  local run, id = where()
  if run == nil or id == 0 then return nil end
  return view(run, id)
end

-- flow.metric(name, n): adds n to the metric of the current call (tokens, cost, bytes...)
function M.metric(name, n)
  if type(name) ~= "string" then error("flow.metric: name must be a string, got " .. type(name), 2) end
  if type(n) ~= "number" then error("flow.metric: n must be a number, got " .. type(n), 2) end
  local run, id = where()
  if run == nil or id == 0 then return end
  local col = run._c[R_METRICS]
  local m = col[id]
  if not m then
    m = {}
    col[id] = m
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
  parts[#parts + 1] = fmt("%d running", run._ncalls - n.done)
  if n.failed > 0 then parts[#parts + 1] = fmt("%d failed", n.failed) end
  if n.retried > 0 then parts[#parts + 1] = fmt("%d retried", n.retried) end
  local rate = t > 0 and n.done / t or 0
  parts[#parts + 1] = fmt("%.1f calls/s", rate)
  if run.total and run.total > n.done and rate > 0 then
    parts[#parts + 1] = "ETA " .. fmt_secs((run.total - n.done) / rate)
  end
  return concat(parts, "  ")
end

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
  for k in pairs(check.to_set(opts.redact or DEFAULT_REDACT)) do redact[k:lower()] = true end
  local run = setmetatable({
    id = new_id(), name = opts.name or "run", status = "running", _ncalls = 0,
    started = now(), started_at = os.time(), ended = nil, total = nil,
    result = nil, error = nil,
    _n = { done = 0, failed = 0, retried = 0 },  -- (started: _ncalls)
    _lanes = {}, _lane_of = {},  -- task id -> lane
    _redact = redact, _preview_bytes = math.tointeger(opts.preview_bytes) or 200,
    _on_event = opts.on_event,
    _trace = opts.trace, _report = opts.report,
  }, Run)
  run.calls = calls_proxy(run)
  run._c = {}
  for i = 1, NCOLUMNS do run._c[i] = {} end
  if opts.log then
    run._log, run._logbuf, run._logn = open_log(opts.log), {}, 0
  end
  local progress = opts.progress
  if progress == nil then progress = core.isatty(2) end
  -- calls in the block: this run, no parent (both variables, for inner sessions too)
  run._outer = { RUNVAR:_raw(), CURRENT:_raw() }
  run._prev1, run._ctx1 = RUNVAR:_enter(run)
  run._prev2, run._ctx2 = CURRENT:_enter(0)
  run._task = current_task()
  if wants_events(run) then
    event_run(run, { event = "run_start", run = run.id, name = run.name,
                     started_at = run.started_at },
              fmt('{"event":"run_start","run":%s,"name":%s,"started_at":%d}\n', jstr(run.id),
                  jstr(run.name), run.started_at))
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
    local C = run._c
    local st = C[R_STATUS]
    for id = 1, run._ncalls do
      if st[id] == "running" then
        st[id], C[R_ENDED][id], C[R_ERROR][id] = "cancelled", run.ended, "the run was cancelled"
      end
    end
  end
  if current_task() == run._task then
    CURRENT:_exit(run._prev2, run._ctx2, run._outer[2])
    RUNVAR:_exit(run._prev1, run._ctx1, run._outer[1])
  end
  if wants_events(run) then
    local t = run.ended - run.started
    local msg = err ~= nil and safe_tostring(err) or nil
    event_run(run, { event = "run_end", t = t, run = run.id, status = status,
                     calls = run._ncalls, error = msg },
              fmt('{"event":"run_end","t":%.6f,"run":%s,"status":"%s","calls":%d%s}\n', t,
                  jstr(run.id), status, run._ncalls, opt_str("error", msg)))
  end
  if run._log then
    log_flush(run)
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

local RUN_WITH = check.spec("flow.run_with", SESSION)

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
  local C = self._c
  local nodes, status, attempts_, ended, started, metrics = C[R_NODE], C[R_STATUS],
    C[R_ATTEMPTS], C[R_ENDED], C[R_STARTED], C[R_METRICS]
  for id = 1, self._ncalls do
    local name = nodes[id]
    local s = by[name]
    if s == nil then
      s = { node = name, calls = 0, ok = 0, failed = 0, retried = 0, busy = 0, metrics = {},
            _d = {} }
      by[name] = s
      order[#order + 1] = s
    end
    s.calls = s.calls + 1
    local st = status[id]
    if st == "ok" then s.ok = s.ok + 1 elseif st ~= "running" then s.failed = s.failed + 1 end
    if attempts_[id] then s.retried = s.retried + 1 end
    local e = ended[id]
    if e then
      local d = e - started[id]
      s._d[#s._d + 1] = d
      s.busy = s.busy + d
    end
    local m = metrics[id]
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


-- run:trace_events() -> the trace as a list of JSON texts, one event each
function Run:trace_events()
  local out, n = {}, 0
  local function add(e) n = n + 1; out[n] = e end
  add(fmt('{"ph":"M","name":"process_name","pid":1,"tid":0,"args":{"name":%s}}',
          jstr("lasync flow " .. self.name)))
  for lane, l in ipairs(self._lanes) do
    add(fmt('{"ph":"M","name":"thread_name","pid":1,"tid":%d,"args":{"name":%s}}', lane,
            jstr(l.name)))
  end
  local names = {}  -- node name -> its JSON text
  local t0 = self.started
  local ended = self.ended or now()
  local C = self._c
  local nodes, lanes, parents, labels, inputs, attempts_, starts, ends, outputs, errors,
        metrics, attempt, status = C[R_NODE], C[R_LANE], C[R_PARENT], C[R_LABEL], C[R_INPUT],
        C[R_ATTEMPTS], C[R_STARTED], C[R_ENDED], C[R_OUTPUT], C[R_ERROR], C[R_METRICS],
        C[R_ATTEMPT], C[R_STATUS]
  local function json_preview(p)  -- numbers need no escaping
    if type(p) == "number" then return '"' .. tostring(p) .. '"' end
    return jstr(p)
  end
  for id = 1, self._ncalls do
    local node = nodes[id]
    local jname = names[node]
    if jname == nil then
      jname = jstr(node)
      names[node] = jname
    end
    local lane, parent_id = lanes[id], parents[id]
    local label, input = labels[id], inputs[id]
    -- the fields every attempt's event has: id, parent, label, input
    local common = '"id":' .. id .. (parent_id and (',"parent":' .. parent_id) or "") ..
                   (label and (',"label":' .. jstr(label)) or "") ..
                   (input and (',"input":' .. json_preview(input)) or "")
    local tries = attempts_[id]
    local last_start = starts[id]
    if tries then  -- one event per attempt
      for a, at in ipairs(tries) do
        add(fmt('{"name":%s,"cat":"node","ph":"X","ts":%.3f,"dur":%.3f,"pid":1,"tid":%d,' ..
          '"args":{%s,"attempt":%d,"status":%s,"error":%s}}', jname, (at[1] - t0) * 1e6,
          (at[2] - at[1]) * 1e6, lane, common, a, jstr(at[3]), jstr(at[4])))
      end
      last_start = tries.last or tries[#tries][2]
    end
    local e = ends[id] or ended
    local output, err, m = outputs[id], errors[id], metrics[id]
    local extra = (output and (',"output":' .. json_preview(output)) or "") ..
                  (err and (',"error":' .. jstr(err)) or "")
    if m then
      for k, v in pairs(m) do extra = extra .. "," .. jstr("metric." .. k) .. ":" .. jnum(v) end
    end
    add(fmt('{"name":%s,"cat":"node","ph":"X","ts":%.3f,"dur":%.3f,"pid":1,"tid":%d,' ..
      '"args":{%s,"attempt":%d,"status":"%s"%s}}', jname, (last_start - t0) * 1e6,
      max(0, e - last_start) * 1e6, lane, common, attempt[id], status[id], extra))
    local plane = parent_id and lanes[parent_id]
    if plane and plane ~= lane then  -- an arrow from the parent's lane to the child
      local ts = (starts[id] - t0) * 1e6
      add(fmt('{"name":"call","cat":"flow","ph":"s","id":%d,"ts":%.3f,"pid":1,"tid":%d}', id, ts,
              plane))
      add(fmt('{"name":"call","cat":"flow","ph":"f","bp":"e","id":%d,"ts":%.3f,"pid":1,' ..
              '"tid":%d}', id, ts, lane))
    end
  end
  return out
end

-- run:save_trace(path): the trace as Chrome Trace Event Format JSON, for Perfetto
-- (ui.perfetto.dev) and chrome://tracing
function Run:save_trace(path)
  if type(path) ~= "string" then error("run:save_trace: path must be a string", 2) end
  local head = '{"displayTimeUnit":"ms","otherData":{"run":' .. jstr(self.id) .. ',"name":' ..
               jstr(self.name) .. ',"status":' .. jstr(self.status) .. '},"traceEvents":[\n'
  write_file(path, { head, concat(self:trace_events(), ",\n"), "\n]}\n" }, "run:save_trace")
end

-- run:save_report(path): the self-contained HTML report (lasync.flow_report)
function Run:save_report(path)
  if type(path) ~= "string" then error("run:save_report: path must be a string", 2) end
  write_file(path, require("lasync.flow_report").render(self, FOR_REPORT), "run:save_report")
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
