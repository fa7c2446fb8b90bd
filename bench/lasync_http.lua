-- http, lasync: GETs against the private nginx of bench/http_nginx.sh (URL in BENCH_HTTP_URL).
--   lua5.4 bench/lasync_http.lua http    20,000 GETs of /1k by 64 tasks over keep-alive
--   lua5.4 bench/lasync_http.lua burst   1,000 concurrent GETs of /slow (waits 100 ms)
--   lua5.4 bench/lasync_http.lua mem     10,000 GETs of /slow2s (waits 2 s) in flight at once:
--                                        heap (collectgarbage) and RSS per in-flight request
-- All use one http.client() (one connection pool); every response is checked (status, body).
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local http = require("lasync.http")
local mode = arg[1] or "http"
local base = assert(os.getenv("BENCH_HTTP_URL"), "BENCH_HTTP_URL is not set (bench/run.lua sets it)")
local clock, clock_name = B.wall_clock(async.now, "async.now")

local function check(r, want_len)
  if r.status ~= 200 or #r.body ~= want_len then
    error(("bad response: status %s, %d body bytes"):format(tostring(r.status), #r.body))
  end
end

local function run_http()
  local N, C = B.size(20000), 64
  local url = base .. "/1k"
  local c = http.client()
  check(c:get(url), 1024) -- not timed: resolves, connects once
  local per = {}
  for w = 1, C do per[w] = N // C + (w <= N % C and 1 or 0) end
  local t0 = clock()
  local counts = async.map(function(k)
    for _ = 1, k do check(c:get(url), 1024) end
    return k
  end, per, { concurrency = C })
  local wall = clock() - t0
  local total = 0
  for w = 1, C do total = total + counts[w] end
  assert(total == N, "wrong request count")
  B.result("http", "lasync", { "req_per_s", N / wall, "wall_s", wall, "n", N, "tasks", C,
    "clock", clock_name })
end

local function run_burst()
  local N = B.size(1000)
  local url = base .. "/slow"
  local c = http.client()
  local list = {}
  for i = 1, N do list[i] = i end
  local t0 = clock()
  async.map(function() check(c:get(url), 3) end, list)
  local wall = clock() - t0
  B.result("http_burst", "lasync", { "wall_s", wall, "n", N, "clock", clock_name })
end

local function run_mem()
  local N = B.size(10000)
  local url = base .. "/slow2s"
  local c = http.client()
  check(c:get(url), 3)
  local heap0 = B.heap_after_gc()
  local rss0 = B.status_bytes("VmRSS") or 0
  local started, finished, heap1, rss1 = 0, 0, nil, nil
  local t0 = clock()
  local tasks = {}
  for i = 1, N do
    tasks[i] = async.spawn(function()
      started = started + 1
      local r = c:get(url)
      check(r, 3)
      finished = finished + 1
    end)
  end
  -- probe while all requests are in flight: /slow2s answers after 2 s, so wait until every
  -- task has started its request (and curl has had 0.5 s to connect and send them all), then
  -- take the heap and RSS before any answer; `early` counts answers that came before the probe
  local probe = async.spawn(function()
    while started < N do async.sleep(0) end
    async.sleep(0.5)
    heap1 = B.heap_after_gc()
    rss1 = B.status_bytes("VmRSS") or 0
    return finished
  end)
  local early = async.gather({ probe })[1]
  async.gather(tasks)
  local wall = clock() - t0
  assert(finished == N, "not all requests finished")
  local hwm = B.status_bytes("VmHWM") or 0
  B.result("http_mem", "lasync", { "bytes_per_req", (heap1 - heap0) / N,
    "rss_bytes_per_req", (math.max(rss1, hwm) - rss0) / N, "wall_s", wall, "n", N,
    "early", early })
end

local main = ({ http = run_http, burst = run_burst, mem = run_mem })[mode]
assert(main, "mode must be http, burst or mem")
if async.current_task() then main() else async.run(main) end
