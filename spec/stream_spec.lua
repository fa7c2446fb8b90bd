-- Streams: TCP and Unix-socket clients and servers (async.tcp, async.unix).
local helper = require("spec.helper")
local async = helper.async

local raises = helper.expect_kind
local tcp, unix = async.tcp, async.unix
local port_left_open  -- a port a test leaves a server on, for the next test

-- a server on 127.0.0.1 with an ephemeral port
local function serve(handler, opts)
  return tcp.serve("127.0.0.1", 0, handler, opts)
end

local function connect(srv)
  return tcp.connect("127.0.0.1", srv.port)
end

-- captures what warn() reports while fn runs
local function capture_warnings(fn)
  local got, saved = {}, _G.warn
  _G.warn = function(...) got[#got + 1] = table.concat({ ... }) end
  local ok, err = pcall(fn)
  _G.warn = saved
  if not ok then error(err, 0) end
  return got
end

local rss_kib = helper.rss_kib

describe("async.tcp", function()
  describe("echo (the asyncio streams example)", function()
    helper.it("serves 200 concurrent clients, each in its own task", function()
      local seen = {}
      local srv = serve(function(s)
        local msg = s:read_line()
        seen[#seen + 1] = msg
        s:write(msg, "\n")
      end)
      local replies = async.map(function(i)
        local c <close> = connect(srv)
        c:write("hello " .. i .. "\n")
        return c:read_line()
      end, (function() local l = {} for i = 1, 200 do l[i] = i end return l end)())
      for i = 1, 200 do assert.equal("hello " .. i, replies[i]) end
      assert.equal(200, #seen)
      srv:close{ wait = true }
      assert.equal(0, srv:connections())
    end)

    helper.it("server.port is the real port, peer and sock name both ends", function()
      local peer_of_client
      local srv = serve(function(s)
        peer_of_client = { s:peer() }
        s:write("x")
      end)
      assert.is_true(srv.port > 0)
      local c = connect(srv)
      assert.equal("x", c:read(1))
      local host, port = c:peer()
      assert.equal("127.0.0.1", host)
      assert.equal(srv.port, port)
      local _, myport = c:sock()
      assert.same({ "127.0.0.1", myport }, peer_of_client)
      c:set_nodelay(true)
      c:set_keepalive(true, 30)
      c:close()
      srv:close()
    end)

    helper.it("connects by name (localhost) and over IPv6 on ::1 when available", function()
      local srv = serve(function(s) s:write(s:read_line(), "\n") end)
      local c = tcp.connect("localhost", srv.port)  -- ::1 may be tried first and refused
      c:write("by name\n")
      assert.equal("by name", c:read_line())
      c:close()
      srv:close()
      local ok, srv6 = pcall(tcp.serve, "::1", 0, function(s) s:write(s:read_line(), "\n") end)
      if not ok then
        pending("no IPv6 on this machine: " .. tostring(srv6))
        return
      end
      local c6 = tcp.connect("::1", srv6.port)
      assert.equal("::1", (c6:peer()))
      c6:write("six\n")
      assert.equal("six", c6:read_line())
      c6:close()
      srv6:close{ wait = true }
    end)
  end)

  describe("reading", function()
    -- a server that sends `chunks` with a pause between them, then closes
    local function chunked(chunks)
      return serve(function(s)
        for _, chunk in ipairs(chunks) do
          s:write(chunk)
          async.sleep(0.01)
        end
      end)
    end

    helper.it("read_line joins lines across chunk boundaries and strips LF and CRLF", function()
      local srv = chunked({ "ab", "c\r", "\nde", "f\n\ng", "h\r\n", "tail" })
      local c = connect(srv)
      local lines = {}
      for line in c:lines() do lines[#lines + 1] = line end
      assert.same({ "abc", "def", "", "gh", "tail" }, lines)
      assert.is_nil(c:read_line())
      c:close()
      srv:close{ wait = true }
    end)

    helper.it("read_until finds a separator split across chunks and consumes it", function()
      local srv = chunked({ "one--", "|two-", "-|", "three-", "-" })
      local c = connect(srv)
      assert.equal("one", c:read_until("--|"))
      assert.equal("two", c:read_until("--|"))
      local err = raises("eof", c.read_until, c, "--|")
      assert.equal("three--", err.partial)
      c:close()
      srv:close{ wait = true }
    end)

    helper.it("read_exactly waits for n bytes; at EOF raises kind eof with err.partial", function()
      local srv = chunked({ "12", "345", "67" })
      local c = connect(srv)
      assert.equal("1234", c:read_exactly(4))
      local err = raises("eof", c.read_exactly, c, 10)
      assert.equal("567", err.partial)
      assert.is_nil(c:read())
      c:close()
      srv:close{ wait = true }
    end)

    helper.it("read(n) returns at most n bytes, nil at EOF; read_all returns the rest", function()
      local srv = chunked({ "abcdef", "ghij" })
      local c = connect(srv)
      assert.equal("abc", c:read(3))
      assert.equal("def", c:read(10))
      assert.equal("ghij", c:read_all())
      assert.is_nil(c:read())
      assert.equal("", c:read_all())
      c:close()
      srv:close{ wait = true }
    end)

    helper.it("the max option bounds read_line and read_until (kind limit)", function()
      local srv = chunked({ string.rep("x", 100), "\nok\n" })
      local c = connect(srv)
      local err = raises("limit", c.read_line, c, { max = 50 })
      assert.equal(50, err.max)
      -- the data stays buffered: a larger max reads the line; a line found longer than max
      -- is refused too
      assert.equal(string.rep("x", 100), c:read_line({ max = 200 }))
      assert.equal("ok", c:read_line())
      c:close()
      local srv2 = chunked({ "abcdef\n" })
      c = connect(srv2)
      raises("limit", c.read_until, c, "\n", { max = 3 })
      assert.equal("abcdef", c:read_until("\n"))
      c:close()
      srv2:close{ wait = true }
      srv:close{ wait = true }
    end)

    helper.it("max counts the result only: not a line's CR, not how the data was chunked",
      function()
        local function read(pieces, fn)
          local srv = chunked(pieces)
          local c = connect(srv)
          local ok, got = pcall(fn, c)
          c:close()
          srv:close{ wait = true }
          return ok and got or got.kind
        end
        local function line4(c) return c:read_line({ max = 4 }) end
        local function until3(c) return c:read_until(";;", { max = 3 }) end
        assert.equal("abcd", read({ "abcd\r\n" }, line4))
        assert.equal("abcd", read({ "abcd\r", "\nx" }, line4))
        assert.equal("abcd", read({ "abcd", "\n" }, line4))
        assert.equal("limit", read({ "abcde", "\n" }, line4))
        assert.equal("limit", read({ "abcd\r", "e\n" }, line4))
        assert.equal("abc", read({ "abc;;" }, until3))
        assert.equal("abc", read({ "abc;", ";" }, until3))
        assert.equal("limit", read({ "abcd;;" }, until3))
        assert.equal("limit", read({ "abc;x", ";;" }, until3))
      end)

    helper.it("a second reader on the same stream is an error, not a hang", function()
      local srv = serve(function(s) s:read() end)
      local c = connect(srv)
      local t = helper.started(c.read, c)
      helper.expect_plain_error({ "already reading" }, c.read, c)
      c:write("x")
      t:cancel()
      helper.expect_cancelled(t)
      c:close()
      srv:close{ wait = true }
    end)
  end)

  describe("writing", function()
    helper.it("backpressure: a writer to a slow reader is held back, memory stays bounded", function()
      local chunk = string.rep("z", 64 * 1024)
      local total = 0
      local srv = serve(function(s)
        while true do
          local data = s:read(16 * 1024)
          if not data then break end
          total = total + #data
          async.sleep(0.001)
        end
      end)
      local c = connect(srv)
      local max_queue = 0
      collectgarbage()
      local rss0 = rss_kib()
      for _ = 1, 160 do  -- 10 MiB written, far faster than it is read
        c:write(chunk)
        max_queue = math.max(max_queue, c:write_queue_size())
      end
      c:shutdown()
      -- write returns once the queue is under the high-water mark (64 KiB) again
      assert.is_true(max_queue <= 64 * 1024 + #chunk, "queue grew to " .. max_queue)
      collectgarbage()
      -- (ASan's quarantine keeps freed memory resident: the bound is checked without it)
      if not (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
        assert.is_true(rss_kib() - rss0 < 8 * 1024, "memory grew by " .. (rss_kib() - rss0) .. " KiB")
      end
      c:read()
      srv:close{ wait = true }
      assert.equal(160 * #chunk, total)
      c:close()
    end)

    helper.it("several tasks may write at once: all data arrives in order, each waits for room",
      function()
        local got, done = {}, async.Event()
        local srv = serve(function(s)
          async.sleep(0.1)  -- the writers fill the queue first
          got = s:read_all()
          done:set()
        end)
        local c = connect(srv)
        local writers = {}
        for i = 1, 3 do
          local chunk = string.rep(tostring(i), 4 * 1024 * 1024)
          writers[i] = async.spawn(function() c:write(chunk) return i end)
        end
        for i = 1, 3 do assert.equal(i, helper.finish(writers[i], 30)) end
        c:close()
        done:wait()
        assert.equal(12 * 1024 * 1024, #got)
        assert.equal(string.rep("1", 4 * 1024 * 1024), got:sub(1, 4 * 1024 * 1024))
        assert.equal(string.rep("3", 4 * 1024 * 1024), got:sub(-4 * 1024 * 1024))
        srv:close{ wait = true }
      end)

    helper.it("shutdown half-closes: the peer reads EOF and can still answer", function()
      local srv = serve(function(s)
        local all = s:read_all()
        s:write("got ", tostring(#all), " bytes")
      end)
      local c = connect(srv)
      c:write("abc", "def", "ghi")
      c:shutdown()
      c:shutdown()  -- twice does nothing
      helper.expect_plain_error({ "shut down" }, c.write, c, "more")
      assert.equal("got 9 bytes", c:read_all())
      c:close()
      srv:close{ wait = true }
    end)

    helper.it("close flushes what was written just before it", function()
      local big = string.rep("q", 1024 * 1024)
      local srv = serve(function(s)
        s:write(big)
        s:close()
      end)
      local c = connect(srv)
      assert.equal(#big, #c:read_all())
      c:close()
      srv:close{ wait = true }
    end)

    helper.it("writing to a connection the peer closed raises kind network", function()
      local srv = serve(function(s) s:close() end)
      local c = connect(srv)
      assert.is_nil(c:read())
      local err = raises("network", function()
        for _ = 1, 1000 do c:write(string.rep("x", 65536)) end
      end)
      assert.is_truthy(err.code == "EPIPE" or err.code == "ECONNRESET", err.code)
      c:close()
      srv:close{ wait = true }
    end)
  end)

  describe("servers", function()
    helper.it("a handler that raises is reported and closes only its own connection", function()
      local srv = serve(function(s)
        local line = s:read_line()
        if line == "boom" then error("handler exploded") end
        s:write("ok ", line, "\n")
      end)
      local warnings = capture_warnings(function()
        local good = connect(srv)
        local bad = connect(srv)
        bad:write("boom\n")
        assert.is_nil(bad:read())  -- the failing handler's connection is closed
        good:write("fine\n")
        assert.equal("ok fine", good:read_line())
        good:close()
        bad:close()
        srv:close{ wait = true }
      end)
      assert.equal(1, #warnings)
      assert.is_truthy(warnings[1]:find("handler exploded", 1, true))
    end)

    helper.it("close stops accepting; wait returns; close{wait=true} waits for handlers", function()
      local release = async.Event()
      local finished = false
      local srv = serve(function(s)
        s:write("hi\n")
        release:wait()
        finished = true
      end)
      local c = connect(srv)
      assert.equal("hi", c:read_line())
      local waiter = helper.started(srv.wait, srv)
      srv:close()
      helper.finish(waiter)
      assert.equal(1, srv:connections())  -- the open connection is still being handled
      raises("connect", tcp.connect, "127.0.0.1", srv.port)
      local closer = helper.started(srv.close, srv, { wait = true })
      helper.settle()
      assert.is_false(closer:done())
      release:set()
      helper.finish(closer)
      assert.is_true(finished)
      c:close()
    end)

    helper.it("a handler's final flush is bounded by flush_timeout: close{wait=true} returns",
      function()
        local srv = serve(function(s)
          local chunk = string.rep("z", 16 * 1024)
          while s:write_queue_size() == 0 do s:write(chunk) end  -- the socket buffers are full
        end, { flush_timeout = 0.2 })
        local c = connect(srv)  -- never reads
        async.sleep(0.1)
        async.timeout(8, srv.close, srv, { wait = true })
        assert.equal(0, srv:connections())
        c:close()
      end)

    helper.it("a server left open is closed when async.run ends", function()
      local port
      async.spawn(function()  -- nothing ever closes it
        local srv = serve(function(s) s:read() end)
        port = srv.port
      end)
      helper.settle()
      assert.is_number(port)
      -- the helper's run ends after this body: a later run can no longer connect
      port_left_open = port
    end)

    it("(the server of the previous test is gone)", function()
      helper.run(function()
        raises("connect", tcp.connect, "127.0.0.1", port_left_open)
      end)
    end)

    helper.it("bad arguments raise plain errors", function()
      helper.expect_plain_error({ "host" }, tcp.connect, 1, 2)
      for _, bad in ipairs({ "", "local\0host" }) do  -- before any name resolution
        local err = helper.expect_plain_error({ "tcp.connect: host must be" }, tcp.connect, bad, 2)
        assert.is_falsy(err:find("dns_resolve", 1, true), err)
        helper.expect_plain_error({ "tcp.serve: host must be" }, tcp.serve, bad, 0, print)
      end
      helper.expect_plain_error({ "port" }, tcp.connect, "127.0.0.1", 70000)
      helper.expect_plain_error({ "port" }, tcp.connect, "127.0.0.1", "80")
      helper.expect_plain_error({ "timeout" }, tcp.connect, "127.0.0.1", 1, { timeout = -1 })
      helper.expect_plain_error({ "handler" }, tcp.serve, "127.0.0.1", 0, 42)
      helper.expect_plain_error({ "backlog" }, tcp.serve, "127.0.0.1", 0, print, { backlog = 0 })
      helper.expect_plain_error({ "flush_timeout" }, tcp.serve, "127.0.0.1", 0, print,
                                { flush_timeout = -1 })
      local srv = serve(function() end)
      local c = connect(srv)
      helper.expect_plain_error({ "must be >= 0" }, c.read, c, -1)
      helper.expect_plain_error({ "separator" }, c.read_until, c, "")
      helper.expect_plain_error({ "string expected" }, c.write, c, {})
      helper.expect_plain_error({ "lasync.stream expected" }, c.read, {})
      c:close()
      c:close()  -- twice is fine
      helper.expect_plain_error({ "closed stream" }, c.read, c)
      helper.expect_plain_error({ "closed stream" }, c.write, c, "x")
      srv:close{ wait = true }
    end)
  end)

  describe("errors", function()
    helper.it("connection refused raises kind connect with code ECONNREFUSED", function()
      local srv = serve(function() end)
      local port = srv.port
      srv:close{ wait = true }
      local err = raises("connect", tcp.connect, "127.0.0.1", port)
      assert.equal("ECONNREFUSED", err.code)
      assert.equal(port, err.port)
    end)

    helper.it("a name that does not resolve raises kind dns", function()
      -- on a machine whose resolver is unreachable the answer may take long: not this spec's
      -- business, so give up after a while
      local ok, err = pcall(async.timeout, 5, tcp.connect, "no-such-host.invalid", 80)
      assert.is_false(ok)
      if async.is_timeout(err) then
        pending("the resolver did not answer within 5 s")
        return
      end
      assert.equal("dns", err.kind, tostring(err))
      assert.is_string(err.code)
      assert.equal("no-such-host.invalid", err.host)
    end)

    helper.it("timeout= bounds connect (kind timeout) against a listener that never accepts", function()
      -- a peer whose accept queue is full: further connection attempts get no answer
      local peer <close> = async.process.spawn{ "python3", "-c", [[
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
]], stdin = "pipe", stdout = "pipe" }
      local port = math.tointeger(tonumber(peer.stdout:read_line()))
      local held, timed_out = {}, nil
      for _ = 1, 20 do
        local ok, s = pcall(tcp.connect, "127.0.0.1", port, { timeout = 0.2 * helper.SLOWDOWN })
        if ok then
          held[#held + 1] = s
        else
          timed_out = s
          break
        end
      end
      assert.is_truthy(timed_out, "every connect succeeded")
      assert.is_true(async.is_timeout(timed_out), tostring(timed_out))
      for _, s in ipairs(held) do s:close() end
      raises("timeout", tcp.connect, "127.0.0.1", port, { timeout = 0 })
      peer.stdin:close()  -- the peer exits
    end)

    helper.it("a stream closed by another task wakes its reader with kind closed", function()
      local srv = serve(function(s) s:read() end)
      local c = connect(srv)
      local t = helper.started(function() return c:read() end)
      c:close()
      local ok, err = pcall(helper.finish, t)
      assert.is_false(ok)
      assert.equal("closed", err.kind)
      srv:close{ wait = true }
    end)

    helper.it("a shutdown still flushing when another task closes the stream raises kind closed",
      function()
        local stop = async.Event()
        local srv = serve(function() stop:wait() end)  -- never reads
        local c = connect(srv)
        local chunk = string.rep("s", 65536)
        while c:write_queue_size() == 0 do c:write(chunk) end
        local t = helper.started(c.shutdown, c)
        assert.is_false(t:done())
        local closer = helper.started(c.close, c)  -- waits for the flush too
        closer:cancel()  -- so it closes at once
        helper.expect_cancelled(closer)
        assert.is_true(c:closed())
        local ok, err = pcall(helper.finish, t)
        assert.is_false(ok)
        assert.equal("closed", err.kind)
        stop:set()
        srv:close{ wait = true }
      end)
  end)

  describe("cancellation", function()
    helper.it("read, read_line, read_exactly and read_until are cancellable; the stream stays usable",
      function()
        local go = async.Event()
        local srv = serve(function(s)
          go:wait()
          s:write("late line\n")
          s:read()
        end)
        local c = connect(srv)
        for _, call in ipairs({
          function() return c:read() end, function() return c:read_line() end,
          function() return c:read_exactly(5) end, function() return c:read_until("|") end,
          function() return c:read_all() end,
        }) do
          local t = helper.started(call)
          t:cancel()
          helper.expect_cancelled(t)
        end
        helper.expect_timeout(0.02, c.read_line, c)
        go:set()
        assert.equal("late line", c:read_line())
        c:close()
        srv:close{ wait = true }
      end)

    helper.it("a reader cancelled after its data arrived does not steal the next reader's wait",
      function()
        local peers = {}
        local srv = serve(function(s) peers[#peers + 1] = s; s:read() end)
        local c1 = connect(srv)
        while #peers < 1 do async.sleep(0.01) end
        local c2 = connect(srv)
        while #peers < 2 do async.sleep(0.01) end
        for _ = 1, 5 do
          local a = async.spawn(c1.read_until, c1, "\n")
          local y = async.spawn(function()
            c2:read()    -- often woken in the same turn as a, and resumed first
            a:cancel()   -- then a's read is complete but a has not resumed yet
            local ok, err = pcall(async.timeout, 3, c1.read_until, c1, "\n")
            return ok, type(err) == "table" and err.kind or err
          end)
          async.sleep(0.02)
          peers[2]:write("wake")
          peers[1]:write("abc")
          async.sleep(0.05)
          peers[1]:write("\n")
          local ok, got = y:await()
          if not ok then  -- a still owned the read: a clear error, never a hang
            assert.is_truthy(tostring(got):find("already reading", 1, true), tostring(got))
            got = c1:read_until("\n")
          end
          assert.equal("abc", got)
          helper.expect_cancelled(a)
        end
        c1:close()
        c2:close()
        srv:close{ wait = true }
      end)

    helper.it("a write held back by backpressure is cancellable", function()
      local stop = async.Event()
      local srv = serve(function() stop:wait() end)  -- never reads
      local c = connect(srv)
      local t = helper.started(function()
        while true do c:write(string.rep("w", 65536)) end
      end)
      helper.settle()
      async.sleep(0.05)
      assert.is_false(t:done())
      t:cancel()
      helper.expect_cancelled(t)
      -- the byte stream is broken now: writes raise, close does not wait for the stuck queue
      assert.equal("ECANCELED", raises("network", c.write, c, "more").code)
      c:close()
      stop:set()
      srv:close{ wait = true }
    end)

    helper.it("a shutdown waiting for the queue to drain is cancellable", function()
      local stop = async.Event()
      local srv = serve(function() stop:wait() end)  -- never reads
      local c = connect(srv)
      local chunk = string.rep("s", 65536)
      while c:write_queue_size() == 0 do c:write(chunk) end
      local t = helper.started(c.shutdown, c)
      assert.is_false(t:done())
      t:cancel()
      helper.expect_cancelled(t)
      c:close()  -- does not wait for the stuck queue
      stop:set()
      srv:close{ wait = true }
    end)

    helper.it("connect (DNS included) and accept are cancellable", function()
      local t = helper.started(tcp.connect, "localhost", 9)
      t:cancel()
      pcall(helper.finish, t)  -- cancelled, or refused first on a fast machine
      local srv = serve(function() end)
      local waiter = helper.started(srv.wait, srv)
      waiter:cancel()
      helper.expect_cancelled(waiter)
      srv:close()
      srv:wait()
    end)

    helper.it("cancelling a task that serves closes its server and connections", function()
      local port
      local server_task = helper.started(function()
        local srv <close> = serve(function(s) s:read() end)
        port = srv.port
        srv:wait()
      end)
      helper.settle()
      local c = tcp.connect("127.0.0.1", port)
      server_task:cancel()
      helper.expect_cancelled(server_task)
      raises("connect", tcp.connect, "127.0.0.1", port)
      c:close()
      -- a block left by an error closes its <close> server too
      local ok, err = pcall(function()
        local srv <close> = serve(function() end)
        port = srv.port
        error("leaving")
      end)
      assert.is_false(ok)
      assert.is_truthy(err:find("leaving", 1, true))
      raises("connect", tcp.connect, "127.0.0.1", port)
    end)
  end)
end)

describe("async.unix", function()
  local base, path
  before_each(function()
    base = os.tmpname()  -- creates the file: the socket goes beside it
    path = base .. ".sock"
  end)
  after_each(function()
    os.remove(path)
    os.remove(base)
  end)

  helper.it("serves and connects over a Unix socket; the file goes away on close", function()
    local srv = unix.serve(path, function(s)
      s:write("pong ", s:read_line(), "\n")
    end)
    local c = unix.connect(path)
    c:write("ping\n")
    assert.equal("pong ping", c:read_line())
    assert.equal(path, c:peer())
    assert.same({ nil }, { c:sock() })  -- the connecting side has no name
    helper.expect_plain_error({ "not a TCP stream" }, c.set_nodelay, c, true)
    c:close()
    srv:close{ wait = true }
    assert.is_nil(io.open(path))
  end)

  helper.it("replaces a stale socket file; connecting to nothing raises kind connect", function()
    local srv = unix.serve(path, function() end)
    srv:close{ wait = true }
    local stale = unix.serve(path, function(s) s:write("fresh") end)
    local c = unix.connect(path)
    assert.equal("fresh", c:read_all())
    c:close()
    stale:close{ wait = true }
    local err = raises("connect", unix.connect, path)
    assert.equal("ENOENT", err.code)
    helper.expect_plain_error({ "1 to 107 bytes" }, unix.connect, "/tmp/" .. string.rep("s", 120))
    helper.expect_plain_error({ "1 to 107 bytes" }, unix.serve, "", print)
  end)
end)
