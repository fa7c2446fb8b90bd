-- http, lua-http (Debian lua-http, on cqueues): 20,000 GETs of BENCH_HTTP_URL/1k by 64
-- coroutines, each holding one keep-alive HTTP/1.1 connection (lua-http has no connection
-- pool: http.client.connect once per coroutine, then one stream per request).
-- Debian packages lua-http for Lua 5.1-5.3 only (no 5.4 build of its C dependencies), so
-- bench/run.lua runs this under lua5.3, adding /usr/share/lua/5.1 to LUA_PATH for the pure-Lua
-- dependencies (lpeg_patterns, fifo, basexx) Debian registers for 5.1/5.2 only. Clock:
-- cqueues.monotime (no lua-luv for 5.3).
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local cqueues = require("cqueues")
local client = require("http.client")
local headers_new = require("http.headers").new
local N, C = B.size(20000), 64
local clock = cqueues.monotime
local base = assert(os.getenv("BENCH_HTTP_URL"), "BENCH_HTTP_URL is not set")
local host, port = base:match("^http://([^:/]+):(%d+)")
port = tonumber(port)

local function get(conn)
  local h = headers_new()
  h:append(":method", "GET")
  h:append(":scheme", "http")
  h:append(":authority", host .. ":" .. port)
  h:append(":path", "/1k")
  local stream = assert(conn:new_stream())
  assert(stream:write_headers(h, true))
  local rh = assert(stream:get_headers())
  local body = assert(stream:get_body_as_string())
  if rh:get(":status") ~= "200" or #body ~= 1024 then
    error(("bad response: %s, %d bytes"):format(rh:get(":status"), #body))
  end
  stream:shutdown()
end

local cq = cqueues.new()
local total, wall = 0, nil
cq:wrap(function()
  local conns = {}
  for w = 1, C do
    conns[w] = assert(client.connect({ host = host, port = port, tls = false, version = 1.1 }))
    assert(conns[w]:connect())
  end
  local t0 = clock()
  local left = C
  local cond = require("cqueues.condition").new()
  for w = 1, C do
    local k = N // C + (w <= N % C and 1 or 0)
    cq:wrap(function()
      for _ = 1, k do get(conns[w]) end
      total = total + k
      left = left - 1
      if left == 0 then cond:signal() end
    end)
  end
  cond:wait()
  wall = clock() - t0
  for w = 1, C do conns[w]:close() end
end)
assert(cq:loop())
assert(total == N, "wrong request count")
B.result("http", "lua-http", { "req_per_s", N / wall, "wall_s", wall, "n", N, "clock", "monotime" })
