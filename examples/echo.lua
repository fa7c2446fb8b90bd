-- A line-based TCP service and its clients in one script, plus a subprocess filter.
-- Run it with the interpreter: build/lasync examples/echo.lua
local async = require("lasync")

-- The service: each connection runs in its own task. "upper <text>" answers through `tr`
-- (a subprocess per request), "quit" ends the connection, anything else is echoed.
local function handle(s)
  for line in s:lines() do
    if line == "quit" then break end
    local cmd, text = line:match("^(%S+)%s*(.*)$")
    if cmd == "upper" then
      local r = async.process.run{ "tr", "a-z", "A-Z", input = text, timeout = 5 }
      s:write(r.stdout, "\n")
    else
      s:write(line, "\n")
    end
  end
end

local server = async.tcp.serve("127.0.0.1", 0, handle)
print(("serving on %s port %d"):format(server.host, server.port))

-- Ten clients at once, each with a deadline for its whole conversation.
local function client(i)
  return async.timeout(5, function()
    local s <close> = async.tcp.connect("127.0.0.1", server.port)
    s:write("hello from ", tostring(i), "\n", "upper client ", tostring(i), "\n", "quit\n")
    local echo, upper = s:read_line(), s:read_line()
    assert(s:read_line() == nil, "the server should close after quit")
    return echo .. " / " .. upper
  end)
end

local ids = {}
for i = 1, 10 do ids[i] = i end
for i, answer in ipairs(async.map(client, ids)) do print(i, answer) end

server:close{ wait = true }
