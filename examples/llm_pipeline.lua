-- A document pipeline against a (fake) LLM API, with lasync.flow: every call is tracked, and
-- the run ends with a summary table and an HTML report you can open in a browser.
--
--   build/lasync examples/llm_pipeline.lua [report.html]
--
-- fetch -> chunk -> summarise -> combine, for 4 documents. The API (examples/support/
-- fake_llm.lua, started by this script on a free port) answers in 50-200 ms, streams its
-- completions as Server-Sent Events, and answers 10% of the requests with 429 and a
-- Retry-After: the summarise node retries those (honouring Retry-After), runs at most 8 calls
-- at a time and at most 40 a second, and counts the tokens it gets.
local async = require("lasync")
local flow = async.flow
local http = async.http
local here = arg and arg[0] and arg[0]:match("^(.*)/") or "examples"
local fake = dofile(here .. "/support/fake_llm.lua")

local api = fake.serve{ seed = 7 }
local client = http.client{ base_url = api.url, timeout = 10 }

local fetch = flow.node("fetch", function(n)
  return client:get("/docs/" .. n):raise_for_status().body
end, { retries = 2, name_of = function(n) return "doc " .. n end })

local chunk = flow.node("chunk", function(text)
  local chunks = {}
  for para in text:gmatch("[^\n]+") do chunks[#chunks + 1] = para end
  return chunks
end)

local summarise = flow.node("summarise", function(text)
  local resp = client:post("/v1/complete", { json = { prompt = text, stream = true },
                                             stream = true })
  resp:raise_for_status()       -- a 429 raises kind "http" with retry_after: retried
  local tokens = {}
  for ev in resp:sse() do
    if ev.data == "[DONE]" then break end
    tokens[#tokens + 1] = require("cjson").decode(ev.data).token
  end
  flow.metric("tokens", #tokens)
  return table.concat(tokens)
end, {
  retries = 5, backoff = 0.05, concurrency = 8, rate = { rate = 40, per = 1, burst = 8 },
  name_of = function(text) return text:sub(1, 24) end,
})

local combine = flow.node("combine", function(summaries)
  return table.concat(summaries, " / ")
end)

local document = flow.node("document", function(n)
  local parts = flow.map(summarise, chunk(fetch(n)))
  return combine(parts)
end)

local report = arg and arg[1] or os.tmpname() .. ".html"
local run <close> = flow.session{ name = "llm pipeline", report = report }
local docs = flow.map(document, { 3, 5, 2, 4 })
for i, text in ipairs(docs) do print(("document %d: %s"):format(i, text:sub(1, 70) .. "...")) end
print()
io.write(run:summary())
print(("%d requests to the API, %d answered 429; report: %s"):format(api.stats.requests,
      api.stats.limited, report))
api:close()
