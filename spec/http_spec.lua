-- The HTTP client against an independent server (Python's standard library, spec/support).
local helper = require("spec.helper")
local servers = require("spec.support.servers")
local async = helper.async
local http = require("lasync.http")

local srv

local function url(path) return srv.url .. path end

local raises = helper.expect_kind

local rss_kib = helper.rss_kib

describe("lasync.http", function()
  setup(function() srv = servers.http() end)
  teardown(function() srv.stop() end)

  it("an idle pooled connection does not hide a deadlock from async.run", function()
    -- in a subprocess (bounded by a timeout): the failure this guards against is a hang
    local r = helper.lua(([[
      local async, http = require("lasync"), require("lasync.http")
      local c = http.client()
      print(pcall(async.run, function()
        assert(c:get(%q).status == 200)
        async.Event():wait()  -- nothing can ever set it: the connection kept for reuse can't
      end))
    ]]):format(url("/status/200")))
    assert.equal(0, r.code, r.stderr)
    assert.matches("^false\t.*deadlock", r.stdout)
  end)

  describe("requests and responses", function()
    helper.it("GET with an escaped query and headers; status, ok, url, http_version, elapsed", function()
      local r = http.get(url("/echo"), { query = { q = "a b&c", n = 1 }, headers = { ["X-Test"] = "yes" } })
      assert.equal(200, r.status)
      assert.is_true(r.ok)
      local j = r:json()
      assert.equal("GET", j.method)
      assert.equal("n=1&q=a%20b%26c", j.query)
      assert.equal("yes", j.headers["x-test"])
      assert.equal(url("/echo?n=1&q=a%20b%26c"), r.url)
      assert.equal("1.1", r.http_version)
      assert.is_true(r.elapsed > 0)
    end)

    helper.it("headers are lower-case, header() takes any case, header_values lists repeats", function()
      local r = http.get(url("/echo"))
      assert.equal("application/json", r.headers["content-type"])
      assert.equal("application/json", r:header("Content-Type"))
      assert.same({ "application/json" }, r:header_values("CONTENT-TYPE"))
      assert.same({}, r:header_values("x-missing"))
      assert.is_nil(r:header("x-missing"))
    end)

    helper.it("json= and form= encode the body and set Content-Type; body= is sent as is", function()
      local j = http.post(url("/echo"), { json = { a = 1 } }):json()
      assert.equal("POST", j.method)
      assert.equal('{"a":1}', j.body)
      assert.equal("application/json", j.headers["content-type"])
      j = http.put(url("/echo"), { form = { x = "1 2", y = "&" } }):json()
      assert.equal("PUT", j.method)
      assert.equal("x=1%202&y=%26", j.body)
      assert.equal("application/x-www-form-urlencoded", j.headers["content-type"])
      j = http.patch(url("/echo"), { body = "raw\0bytes" }):json()
      assert.equal("PATCH", j.method)
      assert.equal("raw\0bytes", j.body)
      assert.equal("DELETE", http.delete(url("/echo")):json().method)
      local h = http.head(url("/status/204"))
      assert.equal(204, h.status)
      assert.equal("", h.body)
    end)

    helper.it("error statuses are responses; raise_for_status raises kind http with an excerpt", function()
      local r = http.get(url("/status/404"))
      assert.equal(404, r.status)
      assert.is_false(r.ok)
      local err = raises("http", r.raise_for_status, r)
      assert.equal(404, err.status)
      assert.equal(url("/status/404"), err.url)
      assert.equal("status 404", err.body)
      assert.is_truthy(tostring(err):find("404", 1, true))
      assert.equal(r, http.get(url("/status/200")):raise_for_status() and r)
      local big = http.get(url("/bytes/5000"))
      big.status = 500
      assert.equal(1024, #raises("http", big.raise_for_status, big).body)
      assert.is_nil(err.retry_after)
    end)

    helper.it("raise_for_status carries Retry-After as retry_after seconds (delta or HTTP date)", function()
      local in_90 = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 90)
      local c = http.client{ transport = function(req)
        local after = req.url:match("after=(.*)$")
        return { status = 429, headers = { ["Retry-After"] = after == "date" and in_90 or after } }
      end }
      local function after(v) return raises("http", function()
        c:get("https://x/?after=" .. v):raise_for_status()
      end).retry_after end
      assert.equal(7, after("7"))
      local secs = after("date")
      assert.is_true(secs >= 85 and secs <= 91, tostring(secs))
      assert.is_nil(after("soon"))
    end)

    helper.it("brotli and zstd bodies are decoded", function()
      assert.equal("hello " .. ("br"):rep(100), http.get(url("/br")).body)
      assert.equal("hello " .. ("zstd"):rep(100), http.get(url("/zstd")).body)
      local raw = http.get(url("/zstd"), { decompress = false })
      assert.equal("zstd", raw:header("content-encoding"))
      assert.is_true(#raw.body < 100)
    end)

    helper.it("gzip bodies are decoded", function()
      assert.equal(("hello gzip"):rep(100), http.get(url("/gzip")).body)
    end)

    helper.it("redirects are followed (up to max_redirects); a loop raises too_many_redirects", function()
      local r = http.get(url("/redirect/3"))
      assert.equal(200, r.status)
      assert.equal("landed", r.body)
      assert.equal(url("/redirect/0"), r.url)
      raises("too_many_redirects", http.get, url("/loop"))
      raises("too_many_redirects", http.get, url("/redirect/3"), { max_redirects = 2 })
      r = http.get(url("/redirect/1"), { follow_redirects = false })
      assert.equal(302, r.status)
      assert.equal("/redirect/0", r:header("location"))
    end)
  end)

  describe("errors", function()
    helper.it("connection refused is kind connect, an unknown host kind dns, both with url", function()
      local e = raises("connect", http.get, "http://127.0.0.1:1/x")
      assert.equal("http://127.0.0.1:1/x", e.url)
      e = raises("dns", http.get, "http://lasync-no-such-host.invalid/")
      assert.is_truthy(e.message)
    end)

    helper.it("timeout= bounds the whole request (kind timeout, phase total)", function()
      local t0 = async.now()
      local e = raises("timeout", http.get, url("/delay/2"), { timeout = 0.2 })
      assert.equal("total", e.phase)
      assert.is_true(async.is_timeout(e))
      assert.is_true(async.now() - t0 < 1.5)
    end)

    helper.it("read_timeout= fires when no data arrives for that long, within a few ms", function()
      local t0 = async.now()
      local e = raises("timeout", http.get, url("/delay/2"), { read_timeout = 0.15 })
      local dt = async.now() - t0
      assert.equal("read", e.phase)
      assert.is_true(dt >= 0.15 and dt < 0.4, "fired after " .. dt)
      -- a slow drip that keeps sending stays alive past the read timeout in total
      local r = http.get(url("/drip/4/0.05"), { read_timeout = 0.15 })
      assert.equal("line 0\nline 1\nline 2\nline 3\n", r.body)
    end)

    helper.it("a connection dropped mid-body is kind network", function()
      raises("network", http.get, url("/drop"))
    end)
  end)

  describe("streaming", function()
    helper.it("returns once headers arrive; chunks, then nil at the end", function()
      local t0 = async.now()
      local r = http.get(url("/drip/3/0.1"), { stream = true })
      assert.is_true(async.now() - t0 < 0.25, "waited for the body")
      assert.equal(200, r.status)
      local parts = {}
      for chunk in r:chunks() do parts[#parts + 1] = chunk end
      assert.equal("line 0\nline 1\nline 2\n", table.concat(parts))
      assert.is_nil(r:read())
    end)

    helper.it("lines() across chunk boundaries", function()
      local r = http.get(url("/drip/5/0.01"), { stream = true })
      local lines = {}
      for line in r:lines() do lines[#lines + 1] = line end
      assert.same({ "line 0", "line 1", "line 2", "line 3", "line 4" }, lines)
    end)

    helper.it("sse() follows the EventSource parsing rules", function()
      local r = http.get(url("/sse/edge"), { stream = true })
      local evs = {}
      for ev in r:sse() do evs[#evs + 1] = ev end
      assert.same({
        { event = "greet", data = "hello\nworld" },
        { event = "message", data = "plain" },
        { event = "message", data = "with id", id = "7", retry = 1500 },
        { event = "message", data = "next", id = "7", retry = 1500 },
        { event = "message", data = "no space", id = "7", retry = 1500 },
        { event = "x", data = "", id = "7", retry = 1500 },
      }, evs)
    end)

    helper.it("close() and <close> abort the transfer early", function()
      do
        local r <close> = http.get(url("/drip/50/0.05"), { stream = true })
        assert.equal("line 0\n", r:read())
      end
      local r = http.get(url("/bytes/10000000"), { stream = true })
      assert.is_truthy(r:read())
      r:close()
      assert.is_nil(r:read())
    end)

    helper.it("a slow reader pauses the transfer: 50 MB streamed with bounded memory", function()
      collectgarbage()
      local before = rss_kib()
      local r = http.get(url("/bytes/52428800"), { stream = true })
      local total, peak = 0, 0
      for chunk in r:chunks() do
        total = total + #chunk
        if total % (4 * 1048576) < #chunk then
          async.sleep(0.01)  -- slower than the network
          collectgarbage("step", 0)
          local now = rss_kib()
          if now - before > peak then peak = now - before end
        end
      end
      assert.equal(52428800, total)
      -- (ASan's quarantine keeps freed memory resident: the bound is checked without it)
      local asan = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true)
      if not asan then assert.is_true(peak < 40 * 1024, "memory grew by " .. peak .. " KiB") end
    end)
  end)

  describe("streamed uploads", function()
    helper.it("body = a function: its chunks are sent (chunked) as curl asks; it may await", function()
      local n = 0
      local r = http.post(url("/echo"), { body = function()
        n = n + 1
        if n > 50 then return nil end
        async.sleep(0)  -- a producer that awaits between chunks
        return ("chunk %02d|"):format(n)
      end })
      local j = r:json()
      assert.equal("POST", j.method)
      assert.equal("chunked", j.headers["transfer-encoding"])
      local want = {}
      for i = 1, 50 do want[i] = ("chunk %02d|"):format(i) end
      assert.equal(table.concat(want), j.body)
    end)

    helper.it("a large streamed PUT arrives whole; an error in the body function aborts", function()
      local block, sent = ("x"):rep(65536), 0
      local r = http.put(url("/echo"), { body = function()
        if sent >= 40 then return nil end
        sent = sent + 1
        return block
      end })
      assert.equal("PUT", r:json().method)
      assert.equal(40 * 65536, #r:json().body)
      local ok, err = pcall(http.post, url("/echo"), { body = function() error("no more data", 0) end })
      assert.is_false(ok)
      assert.equal("no more data", err)
    end)
  end)

  describe("regressions", function()
    local function fake(body)
      return http.client({ transport = function() return { status = 200, body = body } end })
    end

    helper.it("a buffered (not streamed) response can still be read in pieces", function()
      local r = fake("a\nb"):get("http://x.invalid/")
      local lines = {}
      for l in r:lines() do lines[#lines + 1] = l end
      assert.same({ "a", "b" }, lines)
      r = http.get(url("/drip/2/0"))
      assert.equal("line 0\nline 1\n", r:read())
      assert.is_nil(r:read())
      assert.equal("line 0\nline 1\n", r.body)
    end)

    helper.it("an empty event field means 'message'", function()
      local r = fake("event: \ndata: x\n\n"):get("http://x.invalid/", { stream = true })
      local ev = r:sse()()
      assert.equal("message", ev.event)
      assert.equal("x", ev.data)
    end)

    helper.it("close() drops a fake streamed body too", function()
      local r = fake("body"):get("http://x.invalid/", { stream = true })
      r:close()
      assert.is_nil(r:read())
    end)

    helper.it("read_timeout does not fire while a slow reader keeps the transfer paused", function()
      local r = http.get(url("/bytes/20000000"), { stream = true, read_timeout = 0.2 })
      local total, slept = 0, false
      for chunk in r:chunks() do
        total = total + #chunk
        if not slept and total > 4 * 1048576 then
          async.sleep(0.5)  -- longer than read_timeout: the transfer is paused meanwhile
          slept = true
        end
      end
      assert.equal(20000000, total)
    end)

    helper.it("a timeout under a millisecond (or 0) is a limit, not 'none'", function()
      raises("timeout", http.get, url("/delay/0.5"), { timeout = 0.0004 })
      raises("timeout", http.get, url("/delay/0.5"), { timeout = 0 })
    end)
  end)

  describe("cancellation and deadlines", function()
    helper.it("cancelling the task aborts a request at once", function()
      local t = async.spawn(http.get, url("/delay/30"))
      async.sleep(0.05)
      local t0 = async.now()
      t:cancel()
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.is_true(async.is_cancelled(err))
      assert.is_true(async.now() - t0 < 0.2)
    end)

    helper.it("a deadline aborts mid-request and mid-stream", function()
      local e = raises("timeout", async.timeout, 0.1, http.get, url("/delay/30"))
      assert.is_true(async.is_timeout(e))
      local r = http.get(url("/drip/100/0.05"), { stream = true })
      raises("timeout", async.timeout, 0.2, function()
        for _ in r:chunks() do end
      end)
      -- the transfer was aborted: nothing more is delivered, and reading says why
      local rerr = raises("network", r.read, r)
      assert.is_truthy(rerr.message:find("aborted", 1, true))
    end)

    helper.it("1,000 concurrent requests", function()
      local list = {}
      for i = 1, 1000 do list[i] = i end
      local res = async.map(function(i) return http.get(url("/echo?i=" .. i)):json().query end, list)
      assert.equal(1000, res.n)
      for i = 1, 1000 do assert.equal("i=" .. i, res[i]) end
    end)
  end)

  describe("clients", function()
    helper.it("base_url and default headers; request headers override them", function()
      local c = http.client({ base_url = url("/"), headers = { ["X-A"] = "1", ["X-B"] = "2" } })
      local j = c:get("echo", { headers = { ["X-B"] = "3" } }):json()
      assert.equal("/echo", j.path)
      assert.equal("1", j.headers["x-a"])
      assert.equal("3", j.headers["x-b"])
    end)

    helper.it("retries 429 honouring Retry-After, only idempotent methods by default", function()
      local c = http.client({ retry = { attempts = 3, backoff = 0.01 } })
      local t0 = async.now()
      local r = c:get(url("/retry-after/a/2/1"))
      assert.equal(200, r.status)
      assert.equal("attempt 3", r.body)
      assert.is_true(async.now() - t0 >= 1.9, "Retry-After: 1 was not honoured")
      r = c:post(url("/retry-after/b/1/0"), { body = "x" })
      assert.equal(429, r.status)  -- POST is not retried unless told
      local c2 = http.client({ retry = { attempts = 2, backoff = 0.01, methods = { POST = true } } })
      assert.equal(200, c2:post(url("/retry-after/c/1/0"), { body = "x" }).status)
    end)

    helper.it("max_connections bounds the pool: more requests wait for a connection", function()
      local c = http.client({ max_connections = 2 })
      local list = {}
      for i = 1, 10 do list[i] = i end
      local t0 = async.now()
      local res = async.map(function() return c:get(url("/delay/0.1")).num_connects end, list)
      local dt = async.now() - t0
      local connects = 0
      for i = 1, 10 do connects = connects + res[i] end
      assert.is_true(connects <= 2, connects .. " connections")
      assert.is_true(dt >= 0.45, "10 requests of 0.1 s over 2 connections took " .. dt)
    end)

    helper.it("max_per_host bounds connections to each host, not to all hosts", function()
      local c = http.client({ max_per_host = 1 })
      local other = url("/delay/0.3"):gsub("127%.0%.0%.1", "localhost")
      local list = {}
      for i = 1, 6 do list[i] = i <= 3 and url("/delay/0.3") or other end
      local t0 = async.now()
      local res = async.map(function(u) return c:get(u).num_connects end, list)
      local dt = async.now() - t0
      local connects = 0
      for i = 1, 6 do connects = connects + res[i] end
      assert.is_true(connects <= 2, connects .. " connections")
      assert.is_true(dt >= 0.85, "3 requests of 0.3 s over 1 connection took " .. dt)
      assert.is_true(dt < 1.6, "the two hosts did not run in parallel: " .. dt)
    end)

    helper.it("requests on one client do not inherit each other's options", function()
      local c = http.client()
      for _ = 1, 2 do
        local j = c:get(url("/echo")):json()
        assert.equal("GET", j.method)
        assert.is_nil(j.headers["x-test"])
        j = c:post(url("/echo"), { body = "payload", headers = { ["X-Test"] = "1" } }):json()
        assert.equal("POST", j.method)
        assert.equal("payload", j.body)
        assert.equal("1", j.headers["x-test"])
        j = c:get(url("/echo")):json()
        assert.equal("GET", j.method)
        assert.equal("", j.body)
        assert.is_nil(j.headers["x-test"])
        assert.equal(302, c:get(url("/redirect/1"), { follow_redirects = false }).status)
        assert.equal("landed", c:get(url("/redirect/1")).body)  -- redirects followed again
      end
    end)

    helper.it("sequential requests reuse one keep-alive connection", function()
      local c = http.client()
      local connects = 0
      for _ = 1, 50 do
        local r = c:get(url("/status/200"))
        assert.equal(200, r.status)
        connects = connects + r.num_connects
      end
      assert.equal(1, connects)
    end)

    helper.it("a pooled connection the server closed is replaced on the next request", function()
      local c = http.client()
      local r = c:get(url("/idle-close/0.05"))
      assert.equal("then closed", r.body)
      assert.equal(1, r.num_connects)
      async.sleep(0.3)  -- the server drops the idle connection meanwhile
      r = c:get(url("/status/200"))
      assert.equal(200, r.status)
      assert.equal(1, r.num_connects)  -- a new connection
      r = c:get(url("/status/200"))
      assert.equal(0, r.num_connects)  -- and that one is kept
    end)

    helper.it("proxy= sends requests through the proxy (absolute URL in the request line)", function()
      local j = http.get("http://lasync-via-proxy.invalid/echo?x=1", { proxy = srv.url }):json()
      assert.equal("http://lasync-via-proxy.invalid/echo?x=1", j.target)
      assert.equal("/echo", j.path)
      local c = http.client({ proxy = srv.url })
      local via = c:get("http://lasync-via-proxy.invalid/echo"):json()
      assert.equal("http://lasync-via-proxy.invalid/echo", via.target)
    end)

    helper.it("a transport function replaces the network", function()
      local seen
      local c = http.client({ transport = function(req)
        seen = req
        return { status = 201, headers = { ["Content-Type"] = "text/plain" }, body = "faked" }
      end })
      local r = c:post("http://api.invalid/x", { json = { k = "v" } })
      assert.equal(201, r.status)
      assert.equal("faked", r.body)
      assert.equal("text/plain", r:header("content-type"))
      assert.equal("POST", seen.method)
      assert.equal('{"k":"v"}', seen.body)
    end)
  end)
end)
