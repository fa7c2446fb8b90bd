-- Rate-limited fan-out: 30 simulated API calls with async.map, at most 5 in flight, and a
-- RateLimiter allowing 20 calls per second with bursts of 5.
-- Run it with the interpreter: build/lasync examples/ratelimited.lua
local async = require("lasync")

local CALLS, CONCURRENCY = 30, 5
local limiter = async.RateLimiter{ rate = 20, per = 1, burst = 5 }

local in_flight, max_in_flight = 0, 0
local starts = {}                       -- when each call was let through, for the report

-- A stand-in for an HTTP request: 20-60 ms; the limiter paces how often calls start.
local function api_call(id)
  limiter:acquire()
  starts[#starts + 1] = async.now()
  in_flight = in_flight + 1
  max_in_flight = math.max(max_in_flight, in_flight)
  async.sleep(0.02 + 0.01 * (id % 5))
  in_flight = in_flight - 1
  return { id = id, status = 200 }
end

local ids = {}
for i = 1, CALLS do ids[i] = i end

local t0 = async.now()
local responses = async.map(api_call, ids, { concurrency = CONCURRENCY })
local elapsed = async.now() - t0

local ok = 0
for i = 1, responses.n do
  if responses[i].status == 200 and responses[i].id == i then ok = ok + 1 end
end

-- the most calls that started within any 1-second window
local max_per_second = 0
for i = 1, #starts do
  local n = 0
  for j = i, #starts do if starts[j] - starts[i] < 1 then n = n + 1 end end
  max_per_second = math.max(max_per_second, n)
end

print(("%d/%d calls ok in %.2f s"):format(ok, CALLS, elapsed))
print(("max in flight: %d (concurrency %d)"):format(max_in_flight, CONCURRENCY))
print(("most calls started within 1 s: %d (rate 20/s + burst 5 allows at most 25)"):format(
  max_per_second))
-- 5 calls at once, then 25 more at 20 per second: about 1.25 s
assert(ok == CALLS and max_in_flight <= CONCURRENCY and max_per_second <= 25)
assert(elapsed >= 1.2, "the rate limit was not applied")
