-- Options tables are checked, not guessed: every options table of the public API rejects an
-- unknown key and a value of the wrong type, with an error that names the function and the
-- key, raised at the caller's line; sets of names are taken as lists or as sets.
local helper = require("spec.helper")
local async = helper.async
local http = async.http
local tcp, unix = async.tcp, async.unix

local function tmp_sock() return helper.tmpfile(".sock") end

-- Calls f(opts) from this function and returns the error and the line of that call.
local function attempt(f, opts)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(function() local r = f(opts); return r end)
  return ok, err, line
end

local ME = debug.getinfo(1, "S").short_src

-- name: the function as the message names it; call(opts) makes the call (in tail position, so
-- that the error points at attempt's line); key: a valid option, misspelt: an unknown one close
-- to it, bad: a value of the wrong type for key; what: part of the message for bad.
local function cases(srv_port, conn)
  local noop = function() end
  local client = http.client{ transport = function() return { status = 200 } end }
  return {
    { "async.gather", function(o) return async.gather({}, o) end,
      "return_errors", "return_error", 1, "a boolean" },
    { "async.wait", function(o) return async.wait({}, o) end,
      "return_when", "return_whn", "any", 'one of "all", "first", "first_error"' },
    { "async.wait", function(o) return async.wait({}, o) end, "timeout", "timout", -1,
      "a number >= 0" },
    { "async.as_completed", function(o) return async.as_completed({}, o) end,
      "timeout", "timeuot", "1", "a number >= 0" },
    { "async.map", function(o) return async.map(noop, { 1 }, o) end,
      "concurrency", "concurency", 0, "an integer >= 1" },
    { "async.map", function(o) return async.map(noop, { 1 }, o) end,
      "return_errors", "return_errors_", "yes", "a boolean" },
    { "async.Queue", function(o) return async.Queue(o) end, "maxsize", "maxsiz", -1,
      "an integer >= 0" },
    { "async.LifoQueue", function(o) return async.LifoQueue(o) end, "maxsize", "max_size", 1.5,
      "an integer >= 0" },
    { "async.PriorityQueue", function(o) return async.PriorityQueue(o) end, "less", "lees", 1,
      "a function" },
    { "async.RateLimiter", function(o) o.rate = o.rate or 5; return async.RateLimiter(o) end,
      "burst", "brust", "3", "a number >= 1" },
    { "async.RateLimiter", function(o) return async.RateLimiter(o) end,
      "rate", "rat", 0, "a number > 0" },
    { "http.client", function(o) return http.client(o) end, "timeout", "timout", "10",
      "a number >= 0" },
    { "http.client", function(o) return http.client(o) end, "retry", "retyr", true, "a table" },
    { "http.client", function(o) return http.client({ retry = o }) end,
      "attempts", "attemps", 0, "an integer >= 1", "retry." },
    { "http.client", function(o) return http.client({ retry = o }) end,
      "methods", "method", "POST", "a list or set of method names", "retry." },
    { "http.client", function(o) return http.client({ retry = o }) end,
      "statuses", "status", { "503" }, "a list or set of HTTP statuses", "retry." },
    { "http.client", function(o) return http.client(o) end, "max_per_host", "max_per_hots", 0,
      "an integer >= 1" },
    { "http.request", function(o) o.url = "http://x/"; return client:request(o) end,
      "timeout", "timout", {}, "a number >= 0" },
    { "http.request", function(o) o.url = "http://x/"; return http.request(o) end,
      "http_version", "http_versoin", 2, 'one of "auto", "1.1", "2"' },
    { "http.get", function(o) return client:get("http://x/", o) end,
      "headers", "header", "x", "a table" },
    { "http.post", function(o) return http.post("http://x/", o) end,
      "body", "bdy", 42, "a string or a function" },
    { "tcp.connect", function(o) return tcp.connect("127.0.0.1", srv_port, o) end,
      "timeout", "timout", "1", "a number >= 0" },
    { "unix.connect", function(o) return unix.connect(tmp_sock(), o) end,
      "timeout", "timeot", false, "a number >= 0" },
    { "tcp.serve", function(o) return tcp.serve("127.0.0.1", 0, noop, o) end,
      "backlog", "backlgo", 0, "an integer from 1 to 65535" },
    { "unix.serve", function(o) return unix.serve(tmp_sock(), noop, o) end,
      "flush_timeout", "flush_timout", "x", "a number >= 0" },
    { "s:read_line", function(o) return conn:read_line(o) end, "max", "mx", 0, "an integer >= 1" },
    { "s:read_until", function(o) return conn:read_until("\n", o) end, "max", "maxx", "1",
      "an integer >= 1" },
    { "s:lines", function(o) return conn:lines(o) end, "max", "Max", -5, "an integer >= 1" },
    { "process.spawn", function(o) o[1] = "true"; return async.process.spawn(o) end,
      "stdout", "stdot", 1, "a string" },
    { "process.spawn", function(o) o[1] = "true"; return async.process.spawn(o) end,
      "env", "envv", { 1, 2 }, "a table of name = value" },
    { "process.run", function(o) o[1] = "true"; return async.process.run(o) end,
      "timeout", "timout", "1", "a number >= 0" },
    { "process.run", function(o) o[1] = "true"; return async.process.run(o) end,
      "grace", "grase", -1, "a number >= 0" },
    { "fs.stat", function(o) return async.fs.stat("/", o) end, "follow", "folow", 0, "a boolean" },
    { "fs.mkdir", function(o) return async.fs.mkdir("/nonexistent/x", o) end,
      "parents", "parent", "yes", "a boolean" },
    { "fs.remove", function(o) return async.fs.remove("/nonexistent/x", o) end,
      "recursive", "recursve", 1, "a boolean" },
    { "dns.resolve", function(o) return async.dns.resolve("localhost", o) end,
      "family", "famliy", 5, "one of 4, 6" },
  }
end

local function with_server(fn)
  local srv <close> = tcp.serve("127.0.0.1", 0, function(s) s:read_all() end)
  local conn <close> = tcp.connect("127.0.0.1", srv.port)
  fn(srv, conn)
end

describe("options tables", function()
  helper.it("an unknown key is rejected, naming the function and the key, at the caller's line",
            function()
    with_server(function(srv, conn)
      for _, c in ipairs(cases(srv.port, conn)) do
        local name, call, key, misspelt, prefix = c[1], c[2], c[3], c[4], c[7] or ""
        local ok, err, line = attempt(call, { [misspelt] = true })
        assert.is_false(ok, name .. " accepted " .. misspelt)
        assert.is_string(err, name)
        local want = ("%s:%d: %s: unknown option '%s%s'"):format(ME, line, name, prefix, misspelt)
        assert.equal(want, err:sub(1, #want), name)
        -- a close misspelling is answered with the right name
        local hint = ("(did you mean '%s%s'?)"):format(prefix, key)
        assert.is_truthy(err:find(hint, 1, true), name .. ": no hint in: " .. err)
      end
    end)
  end)

  helper.it("a value of the wrong type is rejected, naming the function, the key and the type",
            function()
    with_server(function(srv, conn)
      for _, c in ipairs(cases(srv.port, conn)) do
        local name, call, key, bad, what, prefix = c[1], c[2], c[3], c[5], c[6], c[7] or ""
        local ok, err, line = attempt(call, { [key] = bad })
        assert.is_false(ok, name .. " accepted " .. key .. " = " .. tostring(bad))
        assert.is_string(err, name)
        local want = ("%s:%d: %s: option '%s%s' must be %s"):format(ME, line, name, prefix, key,
                                                                      what)
        assert.equal(want, err:sub(1, #want), name)
        assert.is_truthy(err:find(", got " .. type(bad), 1, true), err)
      end
    end)
  end)

  helper.it("an options argument that is not a table is rejected", function()
    for _, f in ipairs({
      function() return async.gather({}, "x") end,
      function() return http.client(42) end,
      function() return http.get("http://x/", true) end,
      function() return async.fs.stat("/", "follow") end,
      function() return async.dns.resolve("localhost", 4) end,
    }) do
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.matches(": options must be a table, got ", err, 1, true)
    end
  end)

  helper.it("a misspelt key raises before anything happens (no server, no request, no child)",
            function()
    local calls = 0
    local client = http.client{ transport = function() calls = calls + 1; return {} end }
    assert.is_false(pcall(client.get, client, "http://x/", { timout = 1 }))
    assert.equal(0, calls)
    local path = tmp_sock()
    assert.is_false(pcall(unix.serve, path, print, { backlgo = 1 }))
    assert.is_nil(io.open(path))
    local ok, err = pcall(async.process.run, { "sh", "-c", "echo ran > " .. path, stdot = "pipe" })
    assert.is_false(ok, err)
    async.sleep(0.05)
    assert.is_nil(io.open(path))
  end)
end)

describe("sets of names", function()
  -- a transport that fails with 503 until the third attempt
  local function flaky()
    local n = 0
    return function(req)
      n = n + 1
      if n < 3 then return { status = 503, headers = { ["Retry-After"] = "0" } } end
      return { status = 200, body = req.method .. " after " .. n }
    end
  end

  helper.it("retry.methods as a list retries POST (the urllib3 / undici habit)", function()
    local c = http.client{ retry = { methods = { "POST" }, backoff = 0 }, transport = flaky() }
    assert.equal("POST after 3", c:post("http://x/", { body = "b" }).body)
  end)

  helper.it("retry.methods as a set, in any case, retries POST; other methods then are not", function()
    local c = http.client{ retry = { methods = { post = true, GET = false }, backoff = 0 },
                           transport = flaky() }
    assert.equal("POST after 3", c:post("http://x/", { body = "b" }).body)
    c = http.client{ retry = { methods = { post = true }, backoff = 0 }, transport = flaky() }
    assert.equal(503, c:get("http://x/").status)  -- GET is not in the set: one attempt
  end)

  helper.it("retry.statuses as a list or as a set", function()
    for _, statuses in ipairs({ { 503 }, { [503] = true } }) do
      local c = http.client{ retry = { statuses = statuses, backoff = 0 }, transport = flaky() }
      assert.equal("GET after 3", c:get("http://x/").body)
    end
    local c = http.client{ retry = { statuses = { 429 }, backoff = 0 }, transport = flaky() }
    assert.equal(503, c:get("http://x/").status)  -- 503 not listed: not retried
  end)
end)
