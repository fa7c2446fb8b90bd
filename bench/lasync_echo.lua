-- echo, lasync: a TCP echo server and C client connections in one process (the asyncio streams
-- example); each client does round trips of a 100-byte line: write it, read the echo back.
--   lua5.4 bench/lasync_echo.lua CONNS        (echo1: 1 connection, echo100: 100)
-- Round trips per second over all connections, from the first connect to the last reply.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local CONNS = math.tointeger(tonumber(arg[1])) or 1
local TOTAL = B.size(CONNS == 1 and 20000 or 100000)
local PER = TOTAL // CONNS
local LINE = string.rep("x", 99)

local function main()
  local server = async.tcp.serve("127.0.0.1", 0, function(s)
    for line in s:lines() do s:write(line, "\n") end
  end)
  local function client()
    local s <close> = async.tcp.connect("127.0.0.1", server.port)
    local write, read_line = s.write, s.read_line
    for _ = 1, PER do
      write(s, LINE, "\n")
      if read_line(s) ~= LINE then error("bad echo") end
    end
  end
  local clients = {}
  for i = 1, CONNS do clients[i] = client end
  collectgarbage("collect")
  local t0 = B.clock()
  async.gather(clients)
  local wall = B.clock() - t0
  server:close{ wait = true }
  local n = PER * CONNS
  B.result(CONNS == 1 and "echo1" or "echo" .. CONNS, "lasync",
    { "rt_per_s", n / wall, "wall_s", wall, "n", n, "conns", CONNS, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
