-- lasync.sync: Event, Lock, Semaphore, BoundedSemaphore, Condition, Queue, LifoQueue,
-- PriorityQueue and RateLimiter, on top of the core's Futures.
--
-- One waiting protocol serves them all: a task that must wait queues a Future and awaits it;
-- whoever frees a permit or brings an item hands it straight to the first waiter still waiting
-- (FIFO, no barging) by resolving its Future. If the waiter's await raises (cancellation or a
-- deadline) before it was served, its Future is cancelled so that it is skipped; if it raises
-- after it was served but before it resumed, the waiter passes what it was given on.
local core = require("lasync.core")

local M = {}

local Future, current_task, scope, now, sleep = core.Future, core.current_task, core.scope,
  core.now, core.sleep
local setmetatable, error, pcall, type = setmetatable, error, pcall, type
local math_type, huge = math.type, math.huge

-- {====== helpers ======}

local function need_task(what)
  local t = current_task()
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

-- A FIFO of Futures: { first = 1, last = 0, [i] = future }.
local function new_fifo() return { first = 1, last = 0 } end

local function push(q, f)
  local last = q.last + 1
  q.last = last
  q[last] = f
end

-- Removes and returns the first Future still waiting (skipping abandoned ones), or nil.
local function pop_pending(q)
  local first, last = q.first, q.last
  while first <= last do
    local f = q[first]
    q[first] = nil
    first = first + 1
    if not f:done() then
      q.first = first
      return f
    end
  end
  q.first, q.last = 1, 0
  return nil
end

-- Awaits f, just queued. Returns true, value once served; or false, err, served when the
-- await raised (served: f had been resolved already, so the caller must pass it on).
local function wait_on(f)
  local ok, v = pcall(f.await, f)
  if ok then return true, v end
  if f:done() and not f:cancelled() then return false, v, true end
  f:cancel()
  return false, v, false
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
  return setmetatable({ flag = false, waiters = {}, abandoned = 0 }, Event)
end

function Event:set()
  if self.flag then return end
  self.flag = true
  local waiters = self.waiters
  self.waiters, self.abandoned = {}, 0
  for i = 1, #waiters do
    local f = waiters[i]
    if not f:done() then f:set_result(true) end
  end
end

function Event:clear() self.flag = false end
function Event:is_set() return self.flag end

function Event:wait()
  if self.flag then return true end
  need_task("Event:wait")
  local f = Future()
  local waiters = self.waiters
  waiters[#waiters + 1] = f
  local ok, err = wait_on(f)
  if ok then return true end
  -- abandoned: compact the list once half of it is abandoned waits
  self.abandoned = self.abandoned + 1
  if self.abandoned * 2 > #waiters then
    local keep = {}
    for i = 1, #waiters do
      if not waiters[i]:done() then keep[#keep + 1] = waiters[i] end
    end
    if self.waiters == waiters then self.waiters, self.abandoned = keep, 0 end
  end
  error(err, 0)
end

-- {====== Lock ======}

local Lock = class("lasync.Lock")

function M.Lock()
  -- owner: false when free, the holding task, or the Future of the waiter it was handed to
  return setmetatable({ owner = false, q = new_fifo() }, Lock)
end

-- The lock is free: hand it to the first waiter still waiting, or leave it free.
local function lock_handoff(self)
  local f = pop_pending(self.q)
  if f then
    self.owner = f
    f:set_result(true)
  else
    self.owner = false
  end
end

function Lock:acquire()
  local me = current_task()
  local owner = self.owner
  if not owner and me then
    self.owner = me
    return true
  end
  if me == nil then need_task("Lock:acquire") end
  if owner == me then
    error("Lock:acquire: this task already holds the lock (a Lock is not reentrant)", 2)
  end
  local f = Future()
  push(self.q, f)
  local ok, err, served = wait_on(f)
  if ok then
    self.owner = me
    return true
  end
  if served then lock_handoff(self) end  -- it was ours: pass it on
  error(err, 0)
end

function Lock:release()
  local owner = self.owner
  if not owner or owner ~= current_task() then
    error("Lock:release: the lock is not held by this task", 2)
  end
  lock_handoff(self)
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
  local f = pop_pending(self.q)
  if f then
    f:set_result(true)
  else
    self.v = self.v + 1
  end
end

function Semaphore:acquire()
  local v = self.v
  if v > 0 then  -- permits are only kept while nobody waits
    self.v = v - 1
    return true
  end
  need_task("Semaphore:acquire")
  local f = Future()
  push(self.q, f)
  local ok, err, served = wait_on(f)
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
  while n > 0 do
    local f = pop_pending(self.q)
    if f == nil then return end
    f:set_result(true)
    n = n - 1
  end
end

function Condition:wait()
  local me = need_task("Condition:wait")
  if self.lock.owner ~= me then error("Condition:wait: the lock is not held by this task", 2) end
  local f = Future()
  push(self.q, f)
  self.lock:release()
  local ok, err, served = wait_on(f)
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
  if self.lock.owner ~= current_task() or not self.lock.owner then
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

-- Storage: FIFO by default; LifoQueue and PriorityQueue override these four.
local function fifo_len(self) return self.tail - self.head + 1 end
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
Queue._len, Queue._push, Queue._pop, Queue._unget = fifo_len, fifo_push, fifo_pop, fifo_unget

local function new_queue(mt, what, maxsize)
  maxsize = check_count(what, maxsize, 0)
  return setmetatable({
    max = maxsize, buf = {}, head = 1, tail = 0,
    getters = new_fifo(), putters = new_fifo(), reserved = 0,
    closed = false, unfinished = 0, joined = nil,
  }, mt)
end

function M.Queue(maxsize) return new_queue(Queue, "Queue", maxsize) end

-- A slot became free: grant it to the first putter still waiting.
local function grant_putter(self)
  local p = pop_pending(self.putters)
  if p then
    self.reserved = self.reserved + 1
    p:set_result(true)
  end
end

-- An item to deliver now: to the first getter still waiting, else into the storage.
local function deliver(self, v, unget)
  local g = pop_pending(self.getters)
  if g then
    g:set_result(v)
  elseif unget then
    self:_unget(v)
  else
    self:_push(v)
  end
end

local function has_room(self)
  local max = self.max
  return max == 0 or self:_len() + self.reserved < max
end

-- Takes v now if it can (room in the storage, or a getter waiting): returns true.
local function put_now(self, v)
  if has_room(self) then
    self.unfinished = self.unfinished + 1
    deliver(self, v)
    return true
  end
  local g = pop_pending(self.getters)  -- full only counting slots granted to putters
  if g then
    self.unfinished = self.unfinished + 1
    g:set_result(v)
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
  if put_now(self, v) then return end
  need_task("Queue:put")
  local f = Future()
  push(self.putters, f)
  local ok, r, served = wait_on(f)
  if ok then
    if r == CLOSED then error(queue_error("closed", "put: the queue was closed"), 2) end
    self.reserved = self.reserved - 1
    self.unfinished = self.unfinished + 1
    deliver(self, v)
    return
  end
  if served and f:result() ~= CLOSED then  -- a slot was ours: pass it on
    self.reserved = self.reserved - 1
    grant_putter(self)
  end
  error(r, 0)
end

function Queue:get_nowait()
  if self:_len() == 0 then error(queue_error("empty", "get_nowait: the queue is empty"), 2) end
  local v = self:_pop()
  grant_putter(self)
  return v
end

function Queue:get()
  if self:_len() > 0 then
    local v = self:_pop()
    grant_putter(self)
    return v
  end
  if self.closed then return nil end
  need_task("Queue:get")
  local f = Future()
  push(self.getters, f)
  local ok, v, served = wait_on(f)
  if ok then return v end
  if served then  -- an item was handed to us: it goes to the next getter, or back in front
    local item = f:result()
    if item ~= nil then deliver(self, item, true) end
  end
  error(v, 0)
end

function Queue:iter()
  return function() return self:get() end
end

function Queue:close()
  if self.closed then return end
  self.closed = true
  while true do  -- getters only wait on an empty queue: they get nil
    local g = pop_pending(self.getters)
    if g == nil then break end
    g:set_result(nil)
  end
  while true do
    local p = pop_pending(self.putters)
    if p == nil then break end
    p:set_result(CLOSED)
  end
end

function Queue:is_closed() return self.closed end
function Queue:size() return self:_len() end
function Queue:empty() return self:_len() == 0 end
function Queue:full() return self.max > 0 and self:_len() + self.reserved >= self.max end
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
function LifoQueue._len(self) return self.tail end
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

function M.LifoQueue(maxsize) return new_queue(LifoQueue, "LifoQueue", maxsize) end

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

function PriorityQueue._len(self) return self.tail end
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

function M.PriorityQueue(maxsize, less)
  if less ~= nil and type(less) ~= "function" then
    error("bad argument #2 to 'PriorityQueue' (function expected, got " .. type(less) .. ")", 2)
  end
  local q = new_queue(PriorityQueue, "PriorityQueue", maxsize)
  q.less, q.seqs, q.seq, q.unseq = less or default_less, {}, 0, 0
  return q
end

-- {====== RateLimiter ======}

local RateLimiter = class("lasync.RateLimiter")

function M.RateLimiter(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'RateLimiter' (table expected, got " .. type(opts) .. ")", 2)
  end
  local rate, per, burst = opts.rate, opts.per or 1, opts.burst
  if type(rate) ~= "number" or rate ~= rate or rate <= 0 then
    error("RateLimiter: rate must be a number > 0", 2)
  end
  if type(per) ~= "number" or per ~= per or per <= 0 then
    error("RateLimiter: per must be a number of seconds > 0", 2)
  end
  burst = burst or rate
  if type(burst) ~= "number" or burst ~= burst or burst < 1 then
    error("RateLimiter: burst must be a number >= 1", 2)
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
