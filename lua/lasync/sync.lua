-- lasync.sync: Event, Lock, Semaphore, BoundedSemaphore, Condition, Queue, LifoQueue,
-- PriorityQueue and RateLimiter, on top of the core's park/unpark.
--
-- One waiting protocol serves them all: a task that must wait queues itself with a fresh token
-- and parks (core.park); whoever frees a permit or brings an item hands it straight to the first
-- waiter still parked (core.unpark; FIFO, no barging). A waiter cancelled (or past a deadline)
-- before it was served is skipped: unpark refuses a task no longer parked with that token. One
-- cancelled after it was served but before it resumed passes what it was given on.
local core = require("lasync.core")
local check = require("lasync.check")

local M = {}

local current_id, current_task, scope, now, sleep = core.current_id, core.current_task,
  core.scope, core.now, core.sleep
local park, park_in, unpark, is_parked = core.park, core.park_in, core.unpark, core.is_parked
local setmetatable, error, pcall, type = setmetatable, error, pcall, type
local math_type, huge = math.type, math.huge

-- {====== helpers ======}

local function need_task(what)
  local t = current_id()
  if t == nil then
    error(what .. " must be called from a task (inside async.run, or in a script run by the "
          .. "lasync interpreter)", 3)
  end
  return t
end

local function check_count(what, n, default)
  if n == nil and default ~= nil then return default end
  if math_type(n) ~= "integer" and not (type(n) == "number" and n == math.floor(n)) then
    error(("bad argument #1 to '%s' (integer expected, got %s)"):format(what,
          n == nil and "no value" or type(n)), 3)
  end
  if n < 0 then error(("bad argument #1 to '%s' (must be >= 0)"):format(what), 3) end
  return math.tointeger(n) or n
end

-- A FIFO of waiters: { first = 1, last = 0, stale = 0, task, token, task, token, ... }.
local function new_fifo() return { first = 1, last = 0, stale = 0 } end

-- Tokens made here count down from -1; core.park_in's count up from 1: they never collide.
local token = 0

-- Queues the running task in q; returns the token to park with (core.park_in does both in C).
local function enqueue(q, what)
  local t = current_task()
  if t == nil then need_task(what) end
  token = token - 1
  local last = q.last
  q[last + 1], q[last + 2] = t, token
  q.last = last + 2
  return token
end

-- Hands v to the first waiter in q still parked; false if there is none.
local function serve(q, v)
  local first, last = q.first, q.last
  while first < last do
    local t, tok = q[first], q[first + 1]
    q[first], q[first + 1] = nil, nil
    first = first + 2
    if unpark(t, tok, v) then
      q.first = first
      return true
    end
  end
  q.first, q.last, q.stale = 1, 0, 0
  return false
end

-- A waiter gave up (cancelled or past a deadline) without being served: its entry stays in q
-- until serve reaches it, but once half of q is such entries, they are dropped.
local function abandoned(q)
  local stale = q.stale + 1
  q.stale = stale
  local n = (q.last - q.first + 1) // 2
  if stale < 16 or stale * 2 < n then return end
  local out, j = new_fifo(), 0
  for i = q.first, q.last, 2 do
    if is_parked(q[i], q[i + 1]) then
      out[j + 1], out[j + 2] = q[i], q[i + 1]
      j = j + 2
    end
    q[i], q[i + 1] = nil, nil
  end
  for i = 1, j do q[i] = out[i] end
  q.first, q.last, q.stale = 1, j, 0
end

-- Parks the running task in q. Returns true, value once served; or false, err, served, value
-- when cancelled (served: a value was given first, which the caller must pass on).
local function wait_in(q, what)
  local ok, v, served, given = park_in(q, what)
  if ok then return true, v end
  if not served then abandoned(q) end
  return false, v, served, given
end

-- `local _ <close> = x:guard()`: one closer per object, made on first use.
local function closer_of(obj, release)
  local c = obj._closer
  if c == nil then
    c = setmetatable({}, { __close = function() release(obj) end })
    obj._closer = c
  end
  return c
end

local NOOP_CLOSER = setmetatable({}, { __close = function() end })

local function class(name)
  local c = { __name = name }
  c.__index = c
  return c
end

-- {====== Event ======}

local Event = class("lasync.Event")

function M.Event()
  return setmetatable({ flag = false, q = new_fifo() }, Event)
end

function Event:set()
  if self.flag then return end
  self.flag = true
  local q = self.q
  self.q = new_fifo()
  for i = q.first, q.last, 2 do unpark(q[i], q[i + 1], true) end
end

function Event:clear() self.flag = false end
function Event:is_set() return self.flag end

function Event:wait()
  if self.flag then return true end
  local ok, err = wait_in(self.q, "Event:wait")
  if ok then return true end
  error(err, 0)  -- every waiter at the time of set was woken: nothing to pass on
end

-- {====== Lock ======}

local Lock = class("lasync.Lock")

function M.Lock()
  -- owner: false when free, the holding task's id, or HANDED
  return setmetatable({ owner = false, q = new_fifo() }, Lock)
end

local HANDED = {}  -- owner while the lock goes to a waiter that has not resumed yet

-- The lock is free: hand it to the first waiter still waiting, or leave it free.
local function lock_handoff(self)
  self.owner = HANDED
  if not serve(self.q, true) then self.owner = false end
end

function Lock:acquire()
  local me = current_id()
  local owner = self.owner
  if not owner and me then
    self.owner = me
    return true
  end
  if me == nil then need_task("Lock:acquire") end
  if owner == me then
    error("Lock:acquire: this task already holds the lock (a Lock is not reentrant)", 2)
  end
  local ok, err, served = wait_in(self.q, "Lock:acquire")
  if ok then
    self.owner = me
    return true
  end
  if served then lock_handoff(self) end  -- it was ours: pass it on
  error(err, 0)
end

function Lock:release()
  local owner = self.owner
  if not owner or owner ~= current_id() then
    error("Lock:release: the lock is not held by this task", 2)
  end
  local q = self.q
  if q.first > q.last then  -- nobody waits
    self.owner = false
  else
    lock_handoff(self)
  end
end

function Lock:locked() return self.owner ~= false end

function Lock:guard()
  self:acquire()
  return closer_of(self, Lock.release)
end

function Lock:with(fn, ...)
  local _ <close> = self:guard()
  return fn(...)
end

-- {====== Semaphore, BoundedSemaphore ======}

local Semaphore = class("lasync.Semaphore")

local function new_semaphore(what, n, bounded)
  n = check_count(what, n, 1)
  return setmetatable({ v = n, bound = bounded and n or nil, q = new_fifo() }, Semaphore)
end

function M.Semaphore(n) return new_semaphore("Semaphore", n, false) end
function M.BoundedSemaphore(n) return new_semaphore("BoundedSemaphore", n, true) end

-- A permit is free: hand it to the first waiter still waiting, or keep it.
local function give(self)
  local q = self.q
  if q.first > q.last or not serve(q, true) then self.v = self.v + 1 end
end

function Semaphore:acquire()
  local v = self.v
  if v > 0 then  -- permits are only kept while nobody waits
    self.v = v - 1
    return true
  end
  local ok, err, served = wait_in(self.q, "Semaphore:acquire")
  if ok then return true end
  if served then give(self) end
  error(err, 0)
end

function Semaphore:release()
  if self.bound and self.v >= self.bound then
    error("BoundedSemaphore:release: released more times than acquired", 2)
  end
  give(self)
end

function Semaphore:value() return self.v end
function Semaphore:locked() return self.v == 0 end

function Semaphore:guard()
  self:acquire()
  return closer_of(self, Semaphore.release)
end

function Semaphore:with(fn, ...)
  local _ <close> = self:guard()
  return fn(...)
end

-- {====== Condition ======}

local Condition = class("lasync.Condition")

function M.Condition(lock)
  if lock == nil then
    lock = M.Lock()
  elseif getmetatable(lock) ~= Lock then
    error("bad argument #1 to 'Condition' (Lock expected, got " .. type(lock) .. ")", 2)
  end
  return setmetatable({ lock = lock, q = new_fifo() }, Condition)
end

function Condition:acquire() return self.lock:acquire() end
function Condition:release() return self.lock:release() end
function Condition:locked() return self.lock:locked() end
function Condition:guard() return self.lock:guard() end
function Condition:with(fn, ...) return self.lock:with(fn, ...) end

local function wake(self, n)
  while n > 0 and serve(self.q, true) do n = n - 1 end
end

function Condition:wait()
  local me = need_task("Condition:wait")
  if self.lock.owner ~= me then error("Condition:wait: the lock is not held by this task", 2) end
  local tok = enqueue(self.q, "Condition:wait")
  self.lock:release()
  local ok, err, served = park(tok)
  if not ok and not served then abandoned(self.q) end
  -- hold the lock again before returning or raising, whatever happens meanwhile
  local s = scope(nil, true)
  local aok, aerr = pcall(self.lock.acquire, self.lock)
  s:close()
  if not aok then error(aerr, 0) end
  if ok then return true end
  if served then wake(self, 1) end  -- the notification was ours: pass it on
  error(err, 0)
end

function Condition:wait_for(predicate)
  local r = predicate()
  while not r do
    self:wait()
    r = predicate()
  end
  return r
end

local function check_holder(self, what)
  if self.lock.owner ~= current_id() or not self.lock.owner then
    error("Condition:" .. what .. ": the lock is not held by this task", 3)
  end
end

function Condition:notify(n)
  check_holder(self, "notify")
  wake(self, n == nil and 1 or check_count("notify", n))
end

function Condition:notify_all()
  check_holder(self, "notify_all")
  wake(self, huge)
end

-- {====== queues ======}

local CLOSED = {}  -- what a waiting putter receives when the queue closes

local function queue_error(kind, message)
  return core.new_error(kind, message)
end

-- Storage in buf[head..tail]: FIFO by default; LifoQueue and PriorityQueue override these
-- three (and keep head at 1).
local function fifo_push(self, v)
  local tail = self.tail + 1
  self.tail = tail
  self.buf[tail] = v
end
local function fifo_pop(self)
  local head = self.head
  local buf = self.buf
  local v = buf[head]
  buf[head] = nil
  self.head = head + 1
  return v
end
local function fifo_unget(self, v)  -- back in front: the next get returns it
  local head = self.head - 1
  self.head = head
  self.buf[head] = v
end

local Queue = class("lasync.Queue")
Queue._push, Queue._pop, Queue._unget = fifo_push, fifo_pop, fifo_unget

local QUEUE = check.spec("async.Queue", { maxsize = check.natural })

-- maxsize: a number, or an options table {maxsize = n}. Called in tail position by the
-- constructors, so level 2 here is the constructor's caller.
local function new_queue(mt, what, maxsize, spec)
  if type(maxsize) == "table" then maxsize = check.options(spec, maxsize, 2).maxsize end
  maxsize = check_count(what, maxsize, 0)
  return setmetatable({
    max = maxsize, buf = {}, head = 1, tail = 0,
    getters = new_fifo(), putters = new_fifo(), reserved = 0,
    closed = false, unfinished = 0, joined = nil,
  }, mt)
end

function M.Queue(maxsize) return new_queue(Queue, "Queue", maxsize, QUEUE) end

-- A slot became free: grant it to the first putter still waiting.
local function grant_putter(self)
  local p = self.putters
  if p.first <= p.last and serve(p, true) then self.reserved = self.reserved + 1 end
end

-- An item to deliver now: to the first getter still waiting (then returns true), else into the
-- storage (at the front if unget).
local function deliver(self, v, unget)
  local g = self.getters
  if g.first <= g.last and serve(g, v) then return true end
  if unget then self:_unget(v) else self:_push(v) end
  return false
end

-- Takes v now if it can (a getter waiting, or room in the storage): returns true.
local function put_now(self, v)
  local g = self.getters
  if g.first <= g.last and serve(g, v) then  -- getters only wait on an empty queue
    self.unfinished = self.unfinished + 1
    return true
  end
  local max = self.max
  if max == 0 or self.tail - self.head + 1 + self.reserved < max then
    self.unfinished = self.unfinished + 1
    self:_push(v)
    return true
  end
  return false
end

function Queue:put_nowait(v)
  if v == nil then error("Queue:put_nowait: cannot put nil", 2) end
  if self.closed then error(queue_error("closed", "put_nowait: the queue is closed"), 2) end
  if not put_now(self, v) then error(queue_error("full", "put_nowait: the queue is full"), 2) end
end

function Queue:put(v)
  if v == nil then error("Queue:put: cannot put nil", 2) end
  if self.closed then error(queue_error("closed", "put: the queue is closed"), 2) end
  local g = self.getters
  if g.first <= g.last and serve(g, v) then  -- put_now, inlined: the hot path
    self.unfinished = self.unfinished + 1
    return
  end
  local max = self.max
  if max == 0 or self.tail - self.head + 1 + self.reserved < max then
    self.unfinished = self.unfinished + 1
    self:_push(v)
    return
  end
  local ok, r, served, given = park_in(self.putters, "Queue:put")
  if ok then
    if r ~= CLOSED then self.reserved = self.reserved - 1 end
    if self.closed then  -- closed, or closed after it granted us a slot: nothing goes in now
      error(queue_error("closed", "put: the queue was closed"), 2)
    end
    self.unfinished = self.unfinished + 1
    -- straight to a getter: the slot we were granted is still free, for the next putter
    if deliver(self, v) then grant_putter(self) end
    return
  end
  if not served then
    abandoned(self.putters)
  elseif given ~= CLOSED then  -- a slot was ours: pass it on
    self.reserved = self.reserved - 1
    grant_putter(self)
  end
  error(r, 0)
end

function Queue:get_nowait()
  if self.tail < self.head then error(queue_error("empty", "get_nowait: the queue is empty"), 2) end
  local v = self:_pop()
  grant_putter(self)
  return v
end

function Queue:get()
  if self.tail >= self.head then
    local v = self:_pop()
    local p = self.putters
    if p.first <= p.last and serve(p, true) then self.reserved = self.reserved + 1 end
    return v
  end
  if self.closed then return nil end
  local ok, v, served, item = park_in(self.getters, "Queue:get")
  if ok then return v end
  if not served then
    abandoned(self.getters)
  elseif item ~= nil then  -- an item was ours: to the next getter, or back in front
    deliver(self, item, true)
  end
  error(v, 0)
end

function Queue:iter()
  return function() return self:get() end
end

function Queue:close()
  if self.closed then return end
  self.closed = true
  while serve(self.getters, nil) do end  -- getters only wait on an empty queue: they get nil
  while serve(self.putters, CLOSED) do end
end

function Queue:is_closed() return self.closed end
function Queue:size() return self.tail - self.head + 1 end
function Queue:empty() return self.tail < self.head end
function Queue:full() return self.max > 0 and self.tail - self.head + 1 + self.reserved >= self.max end
function Queue:maxsize() return self.max end

function Queue:task_done()
  if self.unfinished <= 0 then
    error("Queue:task_done: called more times than items were put", 2)
  end
  self.unfinished = self.unfinished - 1
  if self.unfinished == 0 and self.joined then
    local e = self.joined
    self.joined = nil
    e:set()
  end
end

function Queue:join()
  if self.unfinished == 0 then return end
  local e = self.joined
  if e == nil then
    e = M.Event()
    self.joined = e
  end
  e:wait()
end

-- LifoQueue: the storage is a stack.
local LifoQueue = setmetatable(class("lasync.LifoQueue"), { __index = Queue })
LifoQueue.__index = LifoQueue
function LifoQueue._push(self, v)
  local tail = self.tail + 1
  self.tail = tail
  self.buf[tail] = v
end
LifoQueue._unget = LifoQueue._push
function LifoQueue._pop(self)
  local tail = self.tail
  local v = self.buf[tail]
  self.buf[tail] = nil
  self.tail = tail - 1
  return v
end

local LIFO_QUEUE = check.spec("async.LifoQueue", QUEUE)

function M.LifoQueue(maxsize) return new_queue(LifoQueue, "LifoQueue", maxsize, LIFO_QUEUE) end

-- PriorityQueue: a binary heap ordered by less, ties broken by insertion order.
local PriorityQueue = setmetatable(class("lasync.PriorityQueue"), { __index = Queue })
PriorityQueue.__index = PriorityQueue

local function default_less(a, b) return a < b end

local function before(self, i, j)
  local heap, less = self.buf, self.less
  local a, b = heap[i], heap[j]
  if less(a, b) then return true end
  if less(b, a) then return false end
  return self.seqs[i] < self.seqs[j]
end

local function swap(self, i, j)
  local heap, seqs = self.buf, self.seqs
  heap[i], heap[j] = heap[j], heap[i]
  seqs[i], seqs[j] = seqs[j], seqs[i]
end

local function heap_insert(self, v, seq)
  local i = self.tail + 1
  self.tail = i
  self.buf[i], self.seqs[i] = v, seq
  while i > 1 do
    local parent = i // 2
    if not before(self, i, parent) then break end
    swap(self, i, parent)
    i = parent
  end
end

function PriorityQueue._push(self, v)
  self.seq = self.seq + 1
  heap_insert(self, v, self.seq)
end
function PriorityQueue._unget(self, v)  -- first among equals again
  self.unseq = self.unseq - 1
  heap_insert(self, v, self.unseq)
end
function PriorityQueue._pop(self)
  local heap, seqs, n = self.buf, self.seqs, self.tail
  local top = heap[1]
  heap[1], seqs[1] = heap[n], seqs[n]
  heap[n], seqs[n] = nil, nil
  n = n - 1
  self.tail = n
  local i = 1
  while true do
    local l = 2 * i
    if l > n then break end
    local c = l
    if l + 1 <= n and before(self, l + 1, l) then c = l + 1 end
    if not before(self, c, i) then break end
    swap(self, i, c)
    i = c
  end
  return top
end

local PRIORITY_QUEUE = check.spec("async.PriorityQueue", QUEUE, { less = check.func })

-- PriorityQueue([maxsize [, less]]) or PriorityQueue{maxsize =, less =}
function M.PriorityQueue(maxsize, less)
  if type(maxsize) == "table" then
    local opts = check.options(PRIORITY_QUEUE, maxsize)
    maxsize, less = opts.maxsize, opts.less
  end
  if less ~= nil and type(less) ~= "function" then
    error("bad argument #2 to 'PriorityQueue' (function expected, got " .. type(less) .. ")", 2)
  end
  local q = new_queue(PriorityQueue, "PriorityQueue", maxsize)
  q.less, q.seqs, q.seq, q.unseq = less or default_less, {}, 0, 0
  return q
end

-- {====== RateLimiter ======}

local RateLimiter = class("lasync.RateLimiter")

local RATE_LIMITER = check.spec("async.RateLimiter", {
  rate = check.positive, per = check.positive,
  burst = check.type("a number >= 1", function(v) return type(v) == "number" and v >= 1 end),
})

function M.RateLimiter(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'RateLimiter' (table expected, got " .. type(opts) .. ")", 2)
  end
  check.options(RATE_LIMITER, opts)
  local rate, per, burst = opts.rate, opts.per or 1, opts.burst
  if rate == nil then error("async.RateLimiter: option 'rate' is missing", 2) end
  burst = burst or rate
  if burst < 1 then
    error("async.RateLimiter: option 'burst' must be a number >= 1 (it defaults to rate, " ..
          rate .. ")", 2)
  end
  return setmetatable({ rps = rate / per, burst = burst, tokens = burst, stamp = now(),
                        lock = M.Lock() }, RateLimiter)
end

local function refill(self)
  local t = now()
  local tokens = self.tokens + (t - self.stamp) * self.rps
  self.tokens = tokens < self.burst and tokens or self.burst
  self.stamp = t
end

function RateLimiter:acquire(cost)
  if cost == nil then
    cost = 1
  elseif type(cost) ~= "number" or cost ~= cost or cost <= 0 or cost > self.burst then
    error("RateLimiter:acquire: cost must be a number > 0 and <= burst (" .. self.burst .. ")", 2)
  end
  if not self.lock.owner then  -- nobody waits: take tokens if there are enough
    refill(self)
    if self.tokens >= cost then
      self.tokens = self.tokens - cost
      return true
    end
  end
  local _ <close> = self.lock:guard()  -- waiters are served in order
  refill(self)
  while self.tokens < cost do
    sleep((cost - self.tokens) / self.rps)
    refill(self)
  end
  self.tokens = self.tokens - cost
  return true
end

function RateLimiter:guard(cost)
  self:acquire(cost)
  return NOOP_CLOSER
end

function RateLimiter:with(fn, ...)
  self:acquire()
  return fn(...)
end

return M
