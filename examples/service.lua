-- A line-based TCP service that shuts down gracefully on SIGTERM or SIGINT (Ctrl-C):
-- it stops accepting, lets the connections in progress finish (at most 10 s), stops its
-- background task and exits. SIGHUP "reloads the configuration".
--
--   build/lasync examples/service.lua          a self-test: clients, then SIGTERM to itself
--   build/lasync examples/service.lua 7000     serve on 127.0.0.1:7000 until SIGTERM/Ctrl-C
--                                              (try: nc 127.0.0.1 7000; then Ctrl-C, or kill -TERM)
local async = require("lasync")

local config = { greeting = "hello" }
local stats = { requests = 0, connections = 0 }

-- One connection, in a task of its own: "stats", "quit", or text to answer.
local function handle(s)
  stats.connections = stats.connections + 1
  for line in s:lines{ max = 4096 } do
    if line == "quit" then break end
    stats.requests = stats.requests + 1
    if line == "stats" then
      s:write(("requests=%d connections=%d\n"):format(stats.requests, stats.connections))
    else
      async.sleep(0.05)                    -- stands in for real work
      s:write(config.greeting, ", ", line, "\n")
    end
  end
end

local function serve(port, ready)
  local server <close> = async.tcp.serve("127.0.0.1", port, handle)
  print(("serving on %s port %d"):format(server.host, server.port))
  if ready then ready:set_result(server.port) end

  local _ <close> = async.signal.on("SIGHUP", function()   -- watched until serve returns
    config.greeting = config.greeting == "hello" and "hi" or "hello"
    print("reloaded: greeting is now " .. config.greeting)
  end)

  local stopping = async.Event()
  local g <close> = async.TaskGroup()
  g:spawn(function()                       -- background work until the shutdown
    while not stopping:is_set() do
      local ok, err = pcall(async.timeout, 1, stopping.wait, stopping)
      if not ok and not async.is_timeout(err) then error(err, 0) end
    end
  end)

  local sig = async.race(function() return async.signal.wait("SIGTERM") end,
                         function() return async.signal.wait("SIGINT") end)
  print(("%s: no new connections, waiting for %d"):format(sig, server:connections()))
  stopping:set()
  server:close()
  local ok, err = pcall(async.timeout, 10, server.close, server, { wait = true })
  if not ok then
    if not async.is_timeout(err) then error(err, 0) end
    print("some connections did not finish in 10 s: they are cancelled")
  end
  print(("served %d request(s) on %d connection(s)"):format(stats.requests, stats.connections))
end

local port = tonumber(arg and arg[1])
if port then
  serve(port)
  return
end

-- The self-test: three clients, a reload, then SIGTERM while a request is in progress.
local ready = async.Future()
local service = async.spawn(serve, 0, ready)
port = ready:await()

local function client(name)
  local s <close> = async.tcp.connect("127.0.0.1", port, { timeout = 5 })
  s:write(name, "\n")
  return s:read_line()
end
print(table.concat(async.gather({ function() return client("ann") end,
                                  function() return client("bob") end }), " | "))

async.signal.raise("SIGHUP")
async.sleep(0.05)

local s <close> = async.tcp.connect("127.0.0.1", port, { timeout = 5 })
s:write("cat\n")                           -- in progress when SIGTERM arrives
async.sleep(0.01)
async.signal.raise("SIGTERM")
print(s:read_line())
s:write("stats\n")
print(s:read_line())
local ok, err = pcall(async.tcp.connect, "127.0.0.1", port)
print("a new connection: " .. (ok and "accepted?!" or err.kind))
s:write("quit\n")
service:await()
