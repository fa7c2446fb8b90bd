-- The AsyncWorker pattern with lasync.flow: a worker that runs submitted jobs at most 3 at a
-- time, polled while it works, then joined. Inside a session, every job is a tracked call.
--
--   build/lasync examples/worker.lua
local async = require("lasync")
local flow = async.flow

-- a job: an "API call" of 20-60 ms; every 7th one fails
local resize = flow.node("resize", function(id)
  async.sleep(0.02 + (id % 3) * 0.02)
  if id % 7 == 0 then error("image " .. id .. " is corrupt") end
  return ("image-%02d.png"):format(id)
end)

local run <close> = flow.session{ name = "worker demo" }
local w <close> = flow.worker{ concurrency = 3, name = "resizer" }

local jobs = {}
for id = 1, 10 do jobs[id] = w:submit(resize, id) end

-- poll it, as a service's status endpoint would
while not w:is_finished() do
  local s = w:stats()
  print(("pending %d, running %d, done %d, failed %d"):format(s.pending, s.running, s.done,
        s.failed))
  async.sleep(0.05)
end

local results = w:join({ return_errors = true })   -- failures come back as error values
for id = 1, results.n do
  local r = results[id]
  print(id, jobs[id]:status(), r)
end
io.write(run:summary())
