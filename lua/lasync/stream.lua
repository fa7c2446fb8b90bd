-- lasync.stream: TCP and Unix-socket clients and servers.
--
-- The Stream type itself (read, read_exactly, read_line, read_until, read_all, lines, write,
-- shutdown, close, peer, sock, set_nodelay, set_keepalive) lives in C (csrc/stream.c); this
-- module adds connecting (name resolution, each address in turn, timeouts) and servers: an
-- accept loop in a task of its own that runs each connection's handler in a new task.
local core = require("lasync.core")
local check = require("lasync.check")

local M = {}

local tcp, unix = {}, {}
M.tcp, M.unix = tcp, unix

local concat = table.concat
local type, error, pcall, xpcall, tostring = type, error, pcall, xpcall, tostring
local setmetatable, getmetatable, pairs, next = setmetatable, getmetatable, pairs, next
local math_type = math.type
local traceback = debug.traceback
local new_error, spawn = core.new_error, core.spawn
local current_task, sleep = core.current_task, core.sleep

local function is_kind(e, kind)
  return type(e) == "table" and getmetatable(e) ~= nil and e.kind == kind
end

-- fn(...) under a deadline of `seconds` (nil: none): async.timeout (lasync requires this
-- module, so it is looked up when first needed, not at load time)
local function with_timeout(seconds, fn, ...)
  if seconds == nil then return fn(...) end
  return require("lasync").timeout(seconds, fn, ...)
end

M._with_timeout = with_timeout  -- for lasync.process

local function check_port(fname, port)
  if math_type(port) ~= "integer" or port < 0 or port > 65535 then
    error(fname .. ": port must be an integer 0-65535, got " .. tostring(port), 3)
  end
end

local CONNECT = check.spec("tcp.connect", { timeout = check.seconds })
local UNIX_CONNECT = check.spec("unix.connect", CONNECT)
local SERVE = check.spec("tcp.serve", { backlog = check.range(1, 65535),
                                        flush_timeout = check.seconds })
local UNIX_SERVE = check.spec("unix.serve", SERVE)
local CLOSE = check.spec("server:close", { wait = check.boolean })

-- The options {max =} of the Stream's line readers (csrc/stream.c), checked before C reads them.
do
  local methods = core.stream_methods
  local MAX = { max = check.count }
  local function checked(name, arg)
    local c_fn, spec = methods[name], check.spec("s:" .. name, MAX)
    if arg == 2 then
      methods[name] = function(s, opts)
        if type(opts) == "table" then check.options(spec, opts) end
        return c_fn(s, opts)
      end
    else
      methods[name] = function(s, sep, opts)
        if type(opts) == "table" then check.options(spec, opts) end
        return c_fn(s, sep, opts)
      end
    end
  end
  checked("read_line", 2)
  checked("lines", 2)
  checked("read_until", 3)
end

-- {====== clients ======}

local function check_host(fname, host)
  if type(host) ~= "string" then
    error(fname .. ": host must be a string, got " .. type(host), 3)
  end
  if host == "" or host:find("\0", 1, true) then
    error(fname .. ": host must be a host name or an address, got '" .. host:gsub("%z", "\\0")
          .. "'", 3)
  end
end

local function connect_any(host, port)
  local addrs = core.dns_resolve(host)
  if #addrs == 0 then
    error(new_error("dns", "no address for " .. host, { host = host, code = "EAI_NONAME" }), 0)
  end
  local failures = {}
  local last
  for i = 1, #addrs do
    local ok, s = pcall(core.tcp_connect, addrs[i], port)
    if ok then return s end
    if not is_kind(s, "connect") then error(s, 0) end  -- cancellation, timeout, misuse
    last = s
    failures[#failures + 1] = addrs[i] .. ": " .. s.message
  end
  error(new_error("connect", ("cannot connect to %s port %d (%s)"):format(host, port,
    concat(failures, "; ")), { code = last.code, host = host, port = port }), 0)
end

function tcp.connect(host, port, opts)
  check_host("tcp.connect", host)
  check_port("tcp.connect", port)
  opts = check.options(CONNECT, opts)
  return with_timeout(opts.timeout, connect_any, host, port)
end

local SUN_PATH_MAX = 107  -- sizeof(sun_path) - 1 on Linux

local function check_path(fname, path)
  if type(path) ~= "string" then
    error(fname .. ": path must be a string, got " .. type(path), 3)
  end
  if #path == 0 or #path > SUN_PATH_MAX then
    error(("%s: a Unix socket path must be 1 to %d bytes long, got %d"):format(fname,
      SUN_PATH_MAX, #path), 3)
  end
end

function unix.connect(path, opts)
  check_path("unix.connect", path)
  opts = check.options(UNIX_CONNECT, opts)
  return with_timeout(opts.timeout, core.pipe_connect, path)
end

-- {====== servers ======}

local Server = {}
Server.__index = Server
Server.__name = "lasync.Server"

-- The message handler of a connection handler: a traceback for errors, cancellations as is.
local function handler_msgh(e)
  if is_kind(e, "cancelled") then return e end
  return { traceback(tostring(e), 2) }
end

local FLUSH_TIMEOUT = 10  -- default bound on the flush when a handler ends

local function run_handler(srv, handler, conn)
  local ok, err = xpcall(handler, handler_msgh, conn)
  -- flushes what the handler wrote, within flush_timeout (a client that stops reading must not
  -- hold the handler, and server:close{wait = true}, forever); a cancellation or the timeout
  -- closes at once
  pcall(with_timeout, srv._flush_timeout, conn.close, conn)
  if not conn:closed() then pcall(conn.close, conn) end
  srv._handlers[current_task()] = nil
  if not ok and type(err) == "table" and err[1] then
    warn("lasync: a connection handler failed (its connection was closed): ", err[1])
  end
end

local function accept_loop(srv, listener, handler)
  local _ <close> = listener  -- closed also when the loop is cancelled (shutdown)
  while true do
    local ok, conn = pcall(listener.accept, listener)
    if ok then
      local t = spawn(run_handler, srv, handler, conn)
      t:set_name("connection handler")
      srv._handlers[t] = true
    elseif is_kind(conn, "closed") then
      return
    elseif is_kind(conn, "cancelled") then
      error(conn, 0)
    else  -- EMFILE and the like: report, back off, go on (as asyncio does)
      warn("lasync: accept failed: ", tostring(conn))
      sleep(0.1)
    end
  end
end

local function new_server(listener, handler, opts)
  local srv = setmetatable({ _listener = listener, _handlers = {}, _closed = false,
                             _flush_timeout = opts.flush_timeout or FLUSH_TIMEOUT }, Server)
  srv._acceptor = spawn(accept_loop, srv, listener, handler)
  srv._acceptor:set_name("server accept loop")
  return srv
end

local function check_handler(fname, handler)
  if type(handler) ~= "function" and not (getmetatable(handler) or {}).__call then
    error(fname .. ": handler must be a function, got " .. type(handler), 3)
  end
end

function tcp.serve(host, port, handler, opts)
  check_host("tcp.serve", host)
  check_port("tcp.serve", port)
  check_handler("tcp.serve", handler)
  opts = check.options(SERVE, opts)
  local backlog = math.tointeger(opts.backlog)
  local addrs = core.dns_resolve(host)
  if #addrs == 0 then
    error(new_error("dns", "no address for " .. host, { host = host, code = "EAI_NONAME" }), 2)
  end
  local srv = new_server(core.tcp_listen(addrs[1], port, backlog), handler, opts)
  srv.host, srv.port = srv._listener:sock()
  return srv
end

function unix.serve(path, handler, opts)
  check_path("unix.serve", path)
  check_handler("unix.serve", handler)
  opts = check.options(UNIX_SERVE, opts)
  local srv = new_server(core.pipe_listen(path, math.tointeger(opts.backlog)), handler, opts)
  srv.path = path
  return srv
end

-- server:close([{wait = true}]): stops accepting (connections being handled go on); with
-- wait, also waits until every handler finished.
function Server:close(opts)
  opts = check.options(CLOSE, opts)
  if not self._closed then
    self._closed = true
    self._listener:close()
  end
  if opts.wait then
    self._acceptor:await()
    while true do
      local t = next(self._handlers)
      if t == nil then break end
      t:await()
      self._handlers[t] = nil
    end
  end
end

function Server:__close()  -- (the error a block exits with is not an option table)
  self:close()
end

-- server:wait(): returns once the server is closed (it no longer accepts)
function Server:wait()
  self._acceptor:await()
end

-- server:connections() -> the number of connections being handled
function Server:connections()
  local n = 0
  for _ in pairs(self._handlers) do n = n + 1 end
  return n
end

function Server:__tostring()
  if self.path then return "lasync.Server (unix " .. self.path .. ")" end
  return ("lasync.Server (tcp %s port %d)"):format(self.host, self.port)
end

return M
