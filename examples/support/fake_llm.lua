-- A fake LLM completion API, for examples/llm_pipeline.lua and the benchmarks: it answers like
-- a busy hosted model, slowly, sometimes with 429 Too Many Requests, and can stream.
--
--   local fake = dofile("examples/support/fake_llm.lua")
--   local srv = fake.serve{ seed = 1 }          -- in a task; srv.port, srv:close(), srv.stats
--   build/lasync examples/support/fake_llm.lua [port]   -- as its own process (prints "port N")
--
-- POST /v1/complete with a JSON body {"prompt": "...", "stream": false | true}:
--   - after a latency drawn uniformly between min_latency and max_latency (default 50-200 ms)
--   - a share `limited` (default 10%) of the answers are 429 with "Retry-After: <retry_after>"
--     (default 0.2 s) and no wait
--   - otherwise {"text": "...", "tokens": n}; with "stream": true, the same text as Server-Sent
--     Events, one `data: {"token": "..."}` per word, then `data: [DONE]`
-- GET /docs/<n> -> a plain-text document (n paragraphs of made-up prose), after 20 ms
-- GET /stats -> {"requests":, "limited":, "latency":} (the seconds of latency served in all)
--
-- It reads requests with a few lines of Lua on lasync's TCP streams: enough for the lasync and
-- aiohttp clients of this repository, and nothing like a real HTTP server (lasync's is
-- http.serve, once it exists).
local async = require("lasync")
local cjson = require("cjson")

local M = {}

-- A deterministic "summary" of a prompt: its first words, in capitals.
local function complete(prompt)
  local words = {}
  for w in tostring(prompt):gmatch("%S+") do
    words[#words + 1] = w:upper()
    if #words == 8 then break end
  end
  return "Summary: " .. table.concat(words, " ")
end

local function respond(s, status, reason, headers, body)
  local h = { ("HTTP/1.1 %d %s\r\n"):format(status, reason) }
  for k, v in pairs(headers) do h[#h + 1] = k .. ": " .. v .. "\r\n" end
  h[#h + 1] = "Content-Length: " .. #body .. "\r\n\r\n"
  s:write(table.concat(h), body)
end

local function handle(srv, s)
  local opts, stats = srv.opts, srv.stats
  while true do
    local line = s:read_line()
    if line == nil or line == "" then return end
    local method, path = line:match("^(%u+) (%S+) HTTP/1%.[01]$")
    if not method then return end
    local length = 0
    while true do
      local h = s:read_line()
      if h == nil then return end
      if h == "" then break end
      local name, value = h:match("^([^:]+):%s*(.-)%s*$")
      if name and name:lower() == "content-length" then length = tonumber(value) or 0 end
    end
    local body = length > 0 and s:read_exactly(length) or ""
    local ndoc = path:match("^/docs/(%d+)$")
    if method == "GET" and ndoc then
      async.sleep(0.02)
      local paras = {}
      for i = 1, tonumber(ndoc) do
        paras[i] = ("Paragraph %d of document %s: the quick brown fox jumps over the lazy dog, "
                    .. "while the async runtime keeps %d calls in flight."):format(i, ndoc, i * 8)
      end
      respond(s, 200, "OK", { ["Content-Type"] = "text/plain" }, table.concat(paras, "\n\n"))
    elseif method == "GET" and path == "/stats" then
      respond(s, 200, "OK", { ["Content-Type"] = "application/json" }, cjson.encode(stats))
    elseif method == "POST" and path == "/v1/complete" then
      stats.requests = stats.requests + 1
      local ok, req = pcall(cjson.decode, body)
      if not ok or type(req) ~= "table" then
        respond(s, 400, "Bad Request", {}, "the body must be JSON")
      elseif srv.random() < opts.limited then
        stats.limited = stats.limited + 1
        respond(s, 429, "Too Many Requests", { ["Retry-After"] = tostring(opts.retry_after) },
                "slow down")
      else
        local latency = opts.min_latency + srv.random() * (opts.max_latency - opts.min_latency)
        stats.latency = stats.latency + latency
        local text = complete(req.prompt)
        local words = {}
        for w in text:gmatch("%S+") do words[#words + 1] = w end
        if req.stream then
          s:write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" ..
                  "Transfer-Encoding: chunked\r\n\r\n")
          for i, w in ipairs(words) do
            async.sleep(latency / #words)
            local ev = "data: " .. cjson.encode({ token = (i > 1 and " " or "") .. w }) .. "\n\n"
            s:write(("%x\r\n"):format(#ev), ev, "\r\n")
          end
          local done = "data: [DONE]\n\n"
          s:write(("%x\r\n"):format(#done), done, "\r\n0\r\n\r\n")
        else
          async.sleep(latency)
          respond(s, 200, "OK", { ["Content-Type"] = "application/json" },
                  cjson.encode({ text = text, tokens = #words }))
        end
      end
    else
      respond(s, 404, "Not Found", {}, "no such endpoint")
    end
  end
end

-- fake.serve([opts]) -> server (of async.tcp.serve) with .port, .url, .stats and .opts;
-- opts: port (0: any free one), seed, min_latency, max_latency, limited, retry_after
function M.serve(opts)
  opts = opts or {}
  local o = {
    min_latency = opts.min_latency or 0.05, max_latency = opts.max_latency or 0.2,
    limited = opts.limited or 0.1, retry_after = opts.retry_after or 0.2,
  }
  local state = opts.seed or 1
  local srv = { opts = o, stats = { requests = 0, limited = 0, latency = 0 } }
  function srv.random()  -- a small LCG: the same answers for the same seed, in any Lua
    state = (state * 1103515245 + 12345) % 2147483648
    return state / 2147483648
  end
  local server = async.tcp.serve("127.0.0.1", opts.port or 0, function(s)
    pcall(handle, srv, s)
  end)
  server.stats, server.opts = srv.stats, o
  server.url = "http://127.0.0.1:" .. server.port
  return server
end

-- As a program: serve until killed; prints "port N" once listening.
if arg and arg[0] and arg[0]:match("fake_llm%.lua$") and async.current_task() then
  local srv = M.serve{ port = tonumber(arg[1]) or 0, seed = tonumber(arg[2]) or 1 }
  print("port " .. srv.port)
  io.stdout:flush()
  srv:wait()
end

return M
