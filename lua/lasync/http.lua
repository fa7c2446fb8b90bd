-- lasync.http: an HTTP client on libcurl's multi interface, driven by lasync's loop.
--
--   local http = require("lasync.http")
--   local r = http.get("https://example.com/api", { query = { q = "lua" }, timeout = 10 })
--   print(r.status, r:header("content-type"), #r.body)
--
-- Every call suspends only the calling task. Transfers run in lasync.core (csrc/http.c); this
-- module builds requests, responses, streaming readers (chunks, lines, Server-Sent Events),
-- clients with their own connection pools, and retries.
local core = require("lasync.core")
local check = require("lasync.check")

local M = {}

local type, error, pairs, ipairs, tostring, tonumber = type, error, pairs, ipairs, tostring, tonumber
local setmetatable, getmetatable, pcall, next = setmetatable, getmetatable, pcall, next
local concat = table.concat
local fmt, lower = string.format, string.lower

local new_error = core.new_error

local cjson_ok, cjson = pcall(require, "cjson")

local function json_encode(v)
  if not cjson_ok then error("http: json= needs lua-cjson (Debian: lua-cjson)", 3) end
  return cjson.encode(v)
end

-- {====== URLs and forms ======}

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return fmt("%%%02X", c:byte()) end))
end
M.escape = escape

-- Encodes a table as application/x-www-form-urlencoded: keys sorted (stable URLs), list
-- values repeated (a=1&a=2).
local function urlencode(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    if type(v) == "table" then
      for _, item in ipairs(v) do out[#out + 1] = escape(k) .. "=" .. escape(item) end
    elseif v ~= false then
      out[#out + 1] = escape(k) .. "=" .. escape(v == true and "true" or v)
    end
  end
  return concat(out, "&")
end
M.urlencode = urlencode

local function with_query(url, query)
  if query == nil then return url end
  local q = type(query) == "table" and urlencode(query) or tostring(query)
  if q == "" then return url end
  local hash = url:find("#", 1, true)
  local frag = hash and url:sub(hash) or ""
  if hash then url = url:sub(1, hash - 1) end
  return url .. (url:find("?", 1, true) and "&" or "?") .. q .. frag
end

local function join_url(base, url)
  if base == nil or url:find("^%a[%w+.-]*://") then return url end
  if url:sub(1, 1) == "/" then
    local origin = base:match("^(%a[%w+.-]*://[^/]+)")
    return (origin or base) .. url
  end
  return base:gsub("/*$", "") .. "/" .. url
end

-- The seconds a Retry-After value asks for (delta-seconds or an HTTP date), >= 0; nil if it is
-- neither.
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function retry_after_seconds(after)
  if after == nil then return nil end
  local secs = tonumber(after)
  if secs == nil then
    local d, mon, y, h, mi, s = after:match("%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT")
    if d then
      local t = os.time({ year = tonumber(y), month = MONTHS[mon] or 1, day = tonumber(d),
                          hour = tonumber(h), min = tonumber(mi), sec = tonumber(s) })
      local utc = os.time(os.date("!*t", t))
      secs = t - (utc - t) - os.time()
    end
  end
  if secs == nil or secs ~= secs then return nil end
  return math.max(0, secs)
end

-- {====== responses ======}

local Response = {}
Response.__name = "lasync.http.Response"

-- Parses a raw header block: the status line, then "Name: value" lines.
local function parse_headers(raw)
  local headers, values = {}, {}
  for line in raw:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:%s][^:]*):%s*(.-)%s*$")
    if name then
      name = lower(name)
      local list = values[name]
      if list == nil then
        list = {}
        values[name] = list
      end
      list[#list + 1] = value
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  return headers, values
end

-- Headers are parsed on first use (most callers read only status and body): r.headers and the
-- lists behind header_values come from the raw header block kept in r._raw.
function Response.__index(self, key)
  if key == "headers" or key == "_values" then
    local headers, values = parse_headers(rawget(self, "_raw") or "")
    rawset(self, "headers", headers)
    rawset(self, "_values", values)
    return key == "headers" and headers or values
  end
  return Response[key]
end

local function new_response(fields)
  fields.ok = fields.status >= 200 and fields.status < 300
  return setmetatable(fields, Response)
end

function Response:header(name)
  return self.headers[lower(name)]
end

function Response:header_values(name)
  local list = self._values and self._values[lower(name)]
  if list == nil then return {} end
  return { table.unpack(list) }
end

function Response:text()
  if self.body == nil then self.body = self:read_all() end
  return self.body
end

function Response:json()
  if not cjson_ok then error("Response:json: needs lua-cjson (Debian: lua-cjson)", 2) end
  local ok, v = pcall(cjson.decode, self:text())
  if not ok then
    error(new_error("protocol", "Response:json: the body is not JSON: " .. tostring(v),
                    { url = self.url }), 2)
  end
  return v
end

function Response:raise_for_status()
  if self.status < 400 then return self end
  local body = self.body
  if body == nil and self._req == nil and self._chunks == nil then body = "" end
  local excerpt = body and body:sub(1, 1024) or ""
  local e = new_error("http", fmt("HTTP %d from %s%s", self.status, self.url,
                                  excerpt ~= "" and (": " .. excerpt) or ""),
                      { status = self.status, url = self.url, body = excerpt, response = self,
                        retry_after = retry_after_seconds(self:header("retry-after")) })
  error(e, 2)
end

-- Streaming: the next chunk of the body, or nil at its end.
function Response:read()
  local req = self._req
  if req == nil then  -- a buffered response (or a fake transport's): one chunk, then nil
    local b = self._pending
    self._pending = nil
    return b
  end
  while true do
    local chunk = req:take()
    if chunk then return chunk end
    local done = req:done()
    if done then  -- the end, or the error (raised by wait) after all data was read
      req:wait("data")
      self:close()
      return nil
    end
    req:wait("data")
  end
end

function Response:read_all()
  local parts = {}
  if self._pending then
    parts[1] = self._pending
    self._pending = nil
  end
  for chunk in self:chunks() do parts[#parts + 1] = chunk end
  return concat(parts)
end

function Response:chunks()
  return function() return self:read() end
end

-- Lines of the body, without their line ends (LF or CRLF); the last line may lack one.
function Response:lines()
  local buf, eof = "", false
  return function()
    while true do
      local nl = buf:find("\n", 1, true)
      if nl then
        local line = buf:sub(1, nl - 1)
        buf = buf:sub(nl + 1)
        if line:sub(-1) == "\r" then line = line:sub(1, -2) end
        return line
      end
      if eof then
        if buf == "" then return nil end
        local line = buf
        buf = ""
        return line
      end
      local chunk = self:read()
      if chunk == nil then eof = true else buf = buf .. chunk end
    end
  end
end

-- Server-Sent Events, parsed by the WHATWG EventSource rules: yields {event=, data=, id=,
-- retry=} tables. CR, LF and CRLF end lines; a leading BOM is dropped; comments are skipped;
-- data lines are joined with "\n"; id carries over to later events (the last event ID);
-- retry is the last reconnection time seen; an event the stream ends inside is discarded.
function Response:sse()
  local buf, pos, eof, first = "", 1, false, true
  local data, event, last_id, retry = nil, nil, nil, nil
  local pending_cr = false
  local function next_line()
    while true do
      local s, e = buf:find("[\r\n]", pos)
      if s then
        local line = buf:sub(pos, s - 1)
        if buf:sub(s, s) == "\r" then
          if s == #buf and not eof then  -- a CR at the end: a LF may follow in the next chunk
            pending_cr = true
            pos = s + 1
            return line
          end
          if buf:sub(s + 1, s + 1) == "\n" then e = s + 1 end
        end
        pos = e + 1
        return line
      end
      if eof then return nil end
      local chunk = self:read()
      if chunk == nil then
        eof = true
      else
        if first then
          first = false
          if chunk:sub(1, 3) == "\239\187\191" then chunk = chunk:sub(4) end
        end
        if pending_cr then
          pending_cr = false
          if chunk:sub(1, 1) == "\n" then chunk = chunk:sub(2) end
        end
        buf = buf:sub(pos) .. chunk
        pos = 1
      end
    end
  end
  return function()
    while true do
      local line = next_line()
      if line == nil then return nil end  -- an unfinished event is discarded
      if line == "" then
        if data ~= nil then
          local ev = { event = event or "message", data = concat(data, "\n"), id = last_id,
                       retry = retry }
          data, event = nil, nil
          return ev
        end
        event = nil
      elseif line:sub(1, 1) ~= ":" then
        local field, value = line:match("^([^:]*):(.*)$")
        if field == nil then
          field, value = line, ""
        elseif value:sub(1, 1) == " " then
          value = value:sub(2)
        end
        if field == "data" then
          data = data or {}
          data[#data + 1] = value
        elseif field == "event" then
          event = value ~= "" and value or nil  -- an empty type means "message"
        elseif field == "id" then
          if not value:find("\0", 1, true) then last_id = value end
        elseif field == "retry" then
          if value:match("^%d+$") then retry = tonumber(value) end
        end
      end
    end
  end
end

function Response:close()
  self._pending = nil  -- nothing more is read: also not a buffered body
  local req = self._req
  if req then
    self._req = nil
    req:close()
  end
end
Response.__close = Response.close

-- {====== clients ======}

local Client = {}
Client.__index = Client
Client.__name = "lasync.http.Client"

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true,
                     TRACE = true }

local HTTP_VERSION = check.oneof("auto", "1.1", "2")

local CLIENT = check.spec("http.client", {
  base_url = check.string, headers = check.table, timeout = check.seconds,
  http_version = HTTP_VERSION, verify = check.boolean, ca_file = check.string,
  proxy = check.string, max_connections = check.count, max_per_host = check.count,
  transport = check.callable,
  retry = {
    attempts = check.count, backoff = check.seconds, max_backoff = check.seconds,
    statuses = check.integers("HTTP statuses"), methods = check.names("method names"),
  },
})

local DEFAULT_STATUSES = { [429] = true, [502] = true, [503] = true, [504] = true }

function M.client(opts)
  opts = check.options(CLIENT, opts)
  local retry = opts.retry
  local c = setmetatable({
    base_url = opts.base_url,
    headers = opts.headers or {},
    timeout = opts.timeout,
    http_version = opts.http_version,
    verify = opts.verify, ca_file = opts.ca_file, proxy = opts.proxy,
    transport = opts.transport,
    retry = retry and {
      attempts = retry.attempts or 3,
      backoff = retry.backoff or 0.5,
      max_backoff = retry.max_backoff or 30,
      statuses = check.to_set(retry.statuses) or DEFAULT_STATUSES,
      methods = check.to_set(retry.methods, string.upper),
    },
    _opts = { max_connections = opts.max_connections, max_per_host = opts.max_per_host },
  }, Client)
  return c
end

local function multi_of(c)
  local m = c._multi
  if m == nil then
    m = core.http_multi(c._opts)
    c._multi = m
  end
  return m
end

-- Appends "Name: value" to the header list, replacing an earlier header of the same name (any
-- case); seen maps lower-case names to list positions.
local function add_header(headers, seen, name, value)
  local key = lower(name)
  local at = seen[key]
  if at == nil then
    at = #headers + 1
    seen[key] = at
  end
  headers[at] = name .. ": " .. tostring(value)
end

-- The request table lasync.core's multi:request reads. Only the options given are set: most
-- requests (a GET of a URL) carry three fields, and a small table is cheap to build.
local function build(c, opts, url, method)
  if type(url) ~= "string" then error("http.request: url must be a string", 4) end
  url = join_url(c.base_url, url)
  if opts.query ~= nil then url = with_query(url, opts.query) end
  method = method and method:upper() or nil
  local headers, seen
  if next(c.headers) or opts.headers or opts.json ~= nil or opts.form ~= nil
     or opts.body ~= nil then
    headers, seen = {}, {}
    for k, v in pairs(c.headers) do add_header(headers, seen, k, v) end
    if opts.headers then
      for k, v in pairs(opts.headers) do add_header(headers, seen, k, v) end
    end
  end
  local body = opts.body
  if opts.json ~= nil then
    body = json_encode(opts.json)
    if not seen["content-type"] then add_header(headers, seen, "Content-Type", "application/json") end
  elseif opts.form ~= nil then
    body = urlencode(opts.form)
    if not seen["content-type"] then
      add_header(headers, seen, "Content-Type", "application/x-www-form-urlencoded")
    end
  end
  local req = { url = url, method = method or ((body ~= nil) and "POST" or "GET"), headers = headers }
  if type(body) == "function" then  -- streamed: chunks until nil, sent as curl asks for them
    req.body_fn, req.body_stream = body, true
    if not seen["expect"] then add_header(headers, seen, "Expect", "") end  -- no 1 s "100 Continue"
  elseif body ~= nil then
    req.body = body
  end
  local v = opts.timeout or c.timeout
  if v ~= nil then req.timeout = v end
  if opts.connect_timeout ~= nil then req.connect_timeout = opts.connect_timeout end
  if opts.read_timeout ~= nil then req.read_timeout = opts.read_timeout end
  if opts.follow_redirects ~= nil then req.follow_redirects = opts.follow_redirects end
  if opts.max_redirects ~= nil then req.max_redirects = opts.max_redirects end
  v = opts.http_version or c.http_version
  if v ~= nil then req.http_version = v end
  if opts.verify ~= nil then req.verify = opts.verify elseif c.verify ~= nil then req.verify = c.verify end
  v = opts.ca_file or c.ca_file
  if v ~= nil then req.ca_file = v end
  v = opts.proxy or c.proxy
  if v ~= nil then req.proxy = v end
  if opts.stream then req.stream = true end
  if opts.decompress ~= nil then req.accept_encoding = opts.decompress end
  return req
end

local function fake(c, req)
  if req.body_fn then  -- a fake transport sees the whole body
    local parts = {}
    for chunk in req.body_fn do parts[#parts + 1] = chunk end
    req.body, req.body_fn, req.body_stream = concat(parts), nil, nil
  end
  local out = c.transport(req)
  if type(out) ~= "table" then error("http: the transport must return a table", 3) end
  local headers = {}
  local values = {}
  for k, v in pairs(out.headers or {}) do
    headers[lower(k)] = tostring(v)
    values[lower(k)] = { tostring(v) }
  end
  local body = out.body or ""
  local r = new_response({
    status = out.status or 200, headers = headers, _values = values, url = req.url,
    http_version = out.http_version or "1.1", elapsed = 0,
  })
  if not req.stream then r.body = body end
  r._pending = body ~= "" and body or nil  -- read(), lines(), sse() on any response
  return r
end

local function perform(c, req)
  if c.transport then return fake(c, req) end
  local h = multi_of(c):request(req)
  local ok, err = true, nil
  if req.body_fn then  -- feed the body as curl drains it; the function may await
    ok, err = pcall(function()
      local body_fn = req.body_fn
      while true do
        local chunk = body_fn()
        if chunk ~= nil and type(chunk) ~= "string" then
          error(new_error("invalid", "http: a body function must return strings, then nil"), 0)
        end
        h:feed(chunk)
        if chunk == nil or h:done() then return end
        h:wait("need")
        if h:done() then return end
      end
    end)
  end
  if ok then ok, err = pcall(h.wait, h, req.stream and "headers" or "done") end
  if not ok then
    h:close()
    error(err, 0)
  end
  if req.stream then
    local status, raw, url, version, elapsed, connects = h:info()
    return setmetatable({
      status = status, ok = status >= 200 and status < 300, _raw = raw, url = url,
      http_version = version, elapsed = elapsed, num_connects = connects, _req = h,
    }, Response)
  end
  local status, raw, url, version, elapsed, connects, body = h:finish()  -- closes h
  return setmetatable({
    status = status, ok = status >= 200 and status < 300, _raw = raw, url = url,
    http_version = version, elapsed = elapsed, num_connects = connects, body = body,
    _pending = body ~= "" and body or nil,  -- read(), lines(), sse() on any response
  }, Response)
end

-- Seconds to wait before the next attempt: Retry-After, else exponential backoff with full
-- jitter.
local function retry_delay(policy, attempt, response)
  local secs = response and retry_after_seconds(response:header("retry-after"))
  if secs then return math.min(secs, policy.max_backoff) end
  local base = math.min(policy.max_backoff, policy.backoff * 2 ^ (attempt - 1))
  return base * (0.5 + math.random() * 0.5)
end

local function request(self, opts, url, method)
  local req = build(self, opts, url, method)
  local policy = self.retry
  if policy == nil then return perform(self, req) end
  local allowed = req.body_fn == nil and  -- a streamed body cannot be sent again
                  ((policy.methods and policy.methods[req.method]) or
                   (policy.methods == nil and IDEMPOTENT[req.method]))
  local attempt = 0
  while true do
    attempt = attempt + 1
    local ok, r = pcall(perform, self, req)
    local last = not allowed or attempt >= policy.attempts
    if ok then
      if last or not policy.statuses[r.status] then return r end
      r:close()  -- nothing of a streamed body was handed out yet: retrying is safe
      core.sleep(retry_delay(policy, attempt, r))
    else
      local e = r
      local transient = type(e) == "table" and (e.kind == "connect" or e.kind == "network" or
                                                 (e.kind == "timeout" and e.phase ~= "read"))
      if last or not transient then error(e, 0) end
      core.sleep(retry_delay(policy, attempt, nil))
    end
  end
end

local REQUEST_OPTS = {
  headers = check.table, query = check.either(check.table, check.string),
  body = check.either(check.string, check.func), json = check.any, form = check.table,
  timeout = check.seconds, connect_timeout = check.seconds, read_timeout = check.seconds,
  follow_redirects = check.boolean, max_redirects = check.natural, http_version = HTTP_VERSION,
  verify = check.boolean, ca_file = check.string, proxy = check.string, stream = check.boolean,
  decompress = check.boolean,
}
local REQUEST = check.spec("http.request", REQUEST_OPTS, { url = check.string, method = check.string })

function Client:request(opts)
  if getmetatable(self) ~= Client then error("Client:request: call it as client:request{...}", 2) end
  if type(opts) ~= "table" then error("http.request: options must be a table", 2) end
  check.options(REQUEST, opts)
  return request(self, opts, opts.url, opts.method)
end

local function shorthand(method)
  local name = method:lower()
  local spec = check.spec("http." .. name, REQUEST_OPTS)  -- the method and url are arguments
  return function(self, url, opts)
    if getmetatable(self) ~= Client then error("Client:" .. name .. ": call it with ':'", 2) end
    return request(self, check.options(spec, opts), url, method)
  end
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head" }) do
  Client[m] = shorthand(m:upper())
end

-- {====== module-level functions: a default client ======}

local default
local function default_client()
  default = default or M.client()
  return default
end

function M.request(opts) return default_client():request(opts) end
for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head" }) do
  M[m] = function(url, opts) return default_client()[m](default_client(), url, opts) end
end

return M
