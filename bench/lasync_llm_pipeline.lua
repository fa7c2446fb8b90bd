-- llm_pipeline, lasync: 10,000 calls of a fake LLM API (examples/support/fake_llm.lua, in a
-- process of its own: 50-200 ms per answer, 10% 429 with Retry-After 0.2 s), as a lasync.flow
-- node with retries, at most 256 at a time (the node's concurrency policy; flow.map runs 512
-- workers, so that a call waiting to be retried holds no slot), the run traced and logged.
--
--   lua5.4 bench/lasync_llm_pipeline.lua
-- Prints the client's CPU time per call, the wall time, and the ideal schedule: the latency the
-- server served in all / 256, plus the longest Retry-After wait chain of one call (the waits
-- hold no slot, so only the last ones can add to the wall time).
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local flow = require("lasync.flow")
local cjson = require("cjson")
local N = B.size(10000)
local C = 256
local ROOT = arg[0]:match("^(.*)/bench/[^/]*$") or "."

local function main()
  local srv = async.process.spawn{ ROOT .. "/build/lasync", ROOT .. "/examples/support/fake_llm.lua",
                                   "0", "1", stdout = "pipe" }
  local port = assert(srv.stdout:read_line():match("^port (%d+)"), "the fake server did not start")
  local client = async.http.client{ base_url = "http://127.0.0.1:" .. port, timeout = 30 }
  local complete = flow.node("complete", function(i)
    local r = client:post("/v1/complete", { json = { prompt = "document " .. i .. " text" } })
    return cjson.decode(r:raise_for_status().body).tokens  -- a 429 raises, with retry_after
  end, { concurrency = C, retries = 8, backoff = 0.05 })
  local items = {}
  for i = 1, N do items[i] = i end
  local trace, log = os.tmpname(), os.tmpname()
  local cpu0, t0 = os.clock(), B.clock()
  local run
  do
    local r <close> = flow.session{ name = "llm", trace = trace, log = log, progress = false }
    run = r
    local tokens = flow.map(complete, items, { concurrency = 2 * C })
    assert(tokens.n == N and tokens[N] == 4, "bad answers")
  end
  local wall, cpu = B.clock() - t0, os.clock() - cpu0
  local stats = cjson.decode(client:get("/stats").body)
  local most = 1
  for _, c in ipairs(run.calls) do most = math.max(most, c.attempt) end
  local ideal = stats.latency / C + (most - 1) * 0.2
  srv:kill("SIGTERM")
  srv:close()
  os.remove(trace)
  os.remove(log)
  B.result("llm_pipeline", "lasync", { "cpu_us_per_call", cpu / N * 1e6, "wall_s", wall,
    "ideal_s", ideal, "wall_over_ideal", wall / ideal, "n", N, "limited", stats.limited,
    "requests", stats.requests, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
