-- A producer/consumer pipeline: producer -> Queue(10) -> 3 workers -> results Queue -> collector.
-- Run it with the interpreter: build/lasync examples/pipeline.lua
local async = require("lasync")

local ITEMS, WORKERS, CAPACITY = 60, 3, 10

local jobs = async.Queue(CAPACITY)      -- bounded: the producer waits while 10 jobs are queued
local results = async.Queue()           -- unbounded: workers never wait to report
local most_queued = 0

-- The producer "reads records" and queues them; close() tells the workers there is no more.
local function producer()
  for id = 1, ITEMS do
    async.sleep(0.001)                  -- reading a record
    jobs:put({ id = id, text = ("record %02d"):format(id) })
    most_queued = math.max(most_queued, jobs:size())
  end
  jobs:close()
end

-- A worker processes jobs until the queue is closed and drained.
local function worker(name)
  local done = 0
  for job in jobs:iter() do
    async.sleep(0.005 + 0.003 * (job.id % 4))   -- processing takes 5-14 ms
    results:put({ id = job.id, worker = name, out = job.text:upper() })
    done = done + 1
  end
  return done
end

-- The collector reads results until the results queue is closed.
local function collector()
  local by_id, per_worker = {}, {}
  for r in results:iter() do
    by_id[r.id] = r.out
    per_worker[r.worker] = (per_worker[r.worker] or 0) + 1
  end
  return by_id, per_worker
end

local t0 = async.now()
local coll = async.spawn(collector)
do
  local g <close> = async.TaskGroup()   -- a failing stage cancels the others
  g:spawn(producer)
  for w = 1, WORKERS do g:spawn(worker, "worker" .. w) end
end                                     -- the producer and every worker are done here
results:close()                         -- so nothing more will be reported
local by_id, per_worker = coll:await()

local missing = 0
for id = 1, ITEMS do if by_id[id] == nil then missing = missing + 1 end end
local names = {}
for name, n in pairs(per_worker) do names[#names + 1] = ("%s: %d"):format(name, n) end
table.sort(names)

print(("%d items through Queue(%d) and %d workers in %.2f s, %d missing"):format(
  ITEMS, CAPACITY, WORKERS, async.now() - t0, missing))
print("per worker: " .. table.concat(names, ", "))
print(("most jobs queued at once: %d (capacity %d)"):format(most_queued, CAPACITY))
print("last result: " .. by_id[ITEMS])
assert(missing == 0 and most_queued <= CAPACITY)
