-- Subprocesses (async.process): spawn, wait, kill, run.
local helper = require("spec.helper")
local async = helper.async

local process = async.process
local raises = helper.expect_kind

-- whether pid still exists (a zombie counts: it was not reaped)
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  f:close()
  return true
end

-- waits (polling) until pid is gone, up to secs
local function gone(pid, secs)
  local deadline = async.now() + (secs or 5)
  while alive(pid) do
    if async.now() > deadline then return false end
    async.sleep(0.02)
  end
  return true
end

describe("async.process", function()
  describe("spawn", function()
    helper.it("stdio round trip through pipes (Streams)", function()
      local p = process.spawn{ "cat", stdin = "pipe", stdout = "pipe" }
      assert.is_number(p.pid)
      assert.is_nil(p.stdout:peer())  -- a pipe's ends have no name
      assert.is_nil(p.stdin:sock())
      p.stdin:write("line 1\n", "line 2\n")
      assert.equal("line 1", p.stdout:read_line())
      p.stdin:close()  -- cat sees EOF and exits
      assert.equal("line 2", p.stdout:read_line())
      assert.is_nil(p.stdout:read_line())
      assert.same({ 0 }, { p:wait() })
      p:close()
    end)

    helper.it("a string for stdin is fed to the child", function()
      local p = process.spawn{ "wc", "-c", stdin = "12345", stdout = "pipe" }
      assert.is_nil(p.stdin)
      assert.equal("5", p.stdout:read_all():match("%d+"))
      assert.equal(0, p:wait())
      p:close()
    end)

    helper.it("the string for stdin is fed whole even if the Process is collected", function()
      local data = string.rep("x", 1000000)  -- more than a pipe holds: most of it is queued
      local out = process.spawn{ "sh", "-c", "sleep 0.2; wc -c", stdin = data, stdout = "pipe" }
                         .stdout
      collectgarbage()
      collectgarbage()
      assert.equal(tostring(#data), out:read_all():match("%d+"))
      out:close()
    end)

    helper.it("wait returns the exit code, or nil and the signal's name", function()
      local p = process.spawn{ "sh", "-c", "exit 7" }
      assert.same({ 7 }, { p:wait() })
      assert.equal(7, p.code)
      p = process.spawn{ "sh", "-c", "kill -TERM $$" }
      local code, sig = p:wait()
      assert.is_nil(code)
      assert.equal("SIGTERM", sig)
      assert.same({ true, nil, "SIGTERM" }, { p:exited() })
    end)

    helper.it("kill sends SIGTERM by default, or the signal named; false once exited", function()
      local p = process.spawn{ "sleep", "30" }
      assert.is_true(p:kill())
      assert.same({ nil, "SIGTERM" }, { p:wait() })
      assert.is_false(p:kill())
      p = process.spawn{ "sleep", "30" }
      assert.is_true(p:kill("SIGKILL"))
      assert.same({ nil, "SIGKILL" }, { p:wait() })
      p = process.spawn{ "sleep", "30" }
      p:kill("INT")
      assert.same({ nil, "SIGINT" }, { p:wait() })
      helper.expect_plain_error({ "unknown signal" }, p.kill, p, "SIGNOPE")
    end)

    helper.it("env adds to the inherited environment unless clear_env; cwd", function()
      local dir = os.tmpname()
      os.remove(dir)
      os.execute("mkdir " .. helper.q(dir))
      local p = process.spawn{ "sh", "-c", 'printf "%s|%s|%s" "$LASYNC_X" "${PATH:+has path}" "$(pwd)"',
                               stdout = "pipe", env = { LASYNC_X = "x y" }, cwd = dir }
      local out = p.stdout:read_all()
      p:close()
      assert.equal("x y|has path|" .. dir, out)
      p = process.spawn{ "/usr/bin/env", stdout = "pipe", env = { LASYNC_X = 42 }, clear_env = true }
      out = p.stdout:read_all()
      p:close()
      assert.equal("LASYNC_X=42\n", out)
      os.execute("rmdir " .. helper.q(dir))
    end)

    helper.it("stdout and stderr can be inherited or null; a string for them is rejected", function()
      local p = process.spawn{ "sh", "-c", "echo to-null; echo to-pipe >&2",
                               stdout = "null", stderr = "pipe" }
      assert.is_nil(p.stdout)
      assert.equal("to-pipe\n", p.stderr:read_all())
      p:close()
      helper.expect_plain_error({ "option 'stdout' must be" }, process.spawn, { "true", stdout = "/tmp/x" })
    end)

    helper.it("a missing program raises kind spawn with code ENOENT", function()
      local err = raises("spawn", process.spawn, { "/nonexistent/program" })
      assert.equal("ENOENT", err.code)
      assert.is_truthy(err.message:find("/nonexistent/program", 1, true))
    end)

    helper.it("bad arguments raise plain errors", function()
      helper.expect_plain_error({ "expected a table" }, process.spawn, "ls")
      helper.expect_plain_error({ "command is missing" }, process.spawn, {})
      helper.expect_plain_error({ "argument 2" }, process.spawn, { "ls", {} })
      helper.expect_plain_error({ "unknown option" }, process.spawn, { "ls", stdot = "pipe" })
      helper.expect_plain_error({ "env" }, process.spawn, { "ls", env = { [1] = "x" } })
      helper.expect_plain_error({ "cwd" }, process.spawn, { "ls", cwd = 1 })
      helper.expect_plain_error({ "timeout" }, process.run, { "ls", timeout = "1" })
    end)

    helper.it("a child writing more than a pipe buffer on stdout and stderr does not deadlock", function()
      local script = "head -c 1000000 /dev/zero | tr '\\0' o; head -c 1000000 /dev/zero | tr '\\0' e >&2;"
        .. " head -c 500000 /dev/zero | tr '\\0' o"
      local p = process.spawn{ "sh", "-c", script, stdout = "pipe", stderr = "pipe" }
      local out, err = async.gather(function() return p.stdout:read_all() end,
                                    function() return p.stderr:read_all() end)
      assert.equal(0, p:wait())
      p:close()
      assert.equal(1500000, #out)
      assert.equal(1000000, #err)
      assert.is_nil(out:find("[^o]"))
    end)
  end)

  describe("cancellation", function()
    helper.it("cancelling a task waiting in p:wait() leaves no zombie", function()
      local p = process.spawn{ "sh", "-c", "sleep 0.1" }
      local t = helper.started(p.wait, p)
      t:cancel()
      helper.expect_cancelled(t)
      assert.is_true(gone(p.pid), "the child was not reaped")
    end)

    helper.it("a Process nobody keeps is still reaped when its child exits", function()
      local pid = process.spawn{ "sh", "-c", "sleep 0.1" }.pid
      collectgarbage()
      collectgarbage()
      assert.is_true(gone(pid), "the child was not reaped")
    end)

    helper.it("cancelling process.run terminates the child and reaps it", function()
      local pid_file = os.tmpname()
      local t = helper.started(process.run, { "sh", "-c", "echo $$ > " .. pid_file .. "; exec sleep 30" })
      local pid
      for _ = 1, 250 do
        local f = io.open(pid_file)
        pid = f and tonumber(f:read("a"))
        if f then f:close() end
        if pid then break end
        async.sleep(0.02)
      end
      os.remove(pid_file)
      assert.is_number(pid)
      t:cancel()
      helper.expect_cancelled(t)
      assert.is_false(alive(pid))
    end)

    helper.it("a p:close() that is cancelled kills the child", function()
      local p = process.spawn{ "sleep", "30" }
      local t = helper.started(p.close, p)
      t:cancel()
      helper.expect_cancelled(t)
      assert.is_true(gone(p.pid))
    end)
  end)

  describe("close", function()
    helper.it("several tasks may wait for one process; p:close() while a watcher waits", function()
      local p = process.spawn{ "sh", "-c", "sleep 0.2; exit 3" }
      local watchers = {}
      for i = 1, 3 do watchers[i] = helper.started(p.wait, p) end
      watchers[2]:cancel()  -- a cancelled waiter does not disturb the others
      helper.expect_cancelled(watchers[2])
      async.timeout(5, p.close, p)
      assert.same({ 3 }, { helper.finish(watchers[1]) })
      assert.same({ 3 }, { helper.finish(watchers[3]) })
      assert.same({ 3 }, { p:wait() })
    end)

    helper.it("p:close() does not deadlock on a child blocked writing output nobody reads",
      function()
        local p = process.spawn{ "cat", stdin = "pipe", stdout = "pipe", stderr = "null" }
        local chunk = string.rep("d", 16 * 1024)
        local deadline = async.now() + 20
        -- cat echoes until its stdout pipe is full; then our stdin data stays queued
        while p.stdin:write_queue_size() == 0 do
          assert.is_true(async.now() < deadline, "the queue never filled")
          async.timeout(5, p.stdin.write, p.stdin, chunk)
          async.sleep(0.01)
        end
        async.timeout(5, p.close, p)
        assert.is_true(p.stdout:closed() and p.stdin:closed())
        assert.is_true(p:exited())
      end)
  end)

  describe("teardown", function()
    it("a child still running when the Lua state closes leaves no handle open; it runs on",
      function()
        -- the embedding host closes its loop after lua_close and fails if a handle is left
        local script = helper.script("local async = require('lasync')\n" ..
          "local p = async.process.spawn{ 'sleep', '5' }\nprint(p.pid)\n")
        local r = helper.sh("cd " .. helper.q(helper.ROOT) .. " && " ..
                            helper.q(helper.ROOT .. "/build/embed-host") .. " " .. helper.q(script))
        os.remove(script)
        local pid = tonumber(r.stdout:match("%d+"))
        assert.is_truthy(pid, r.stdout .. r.stderr)
        local running = alive(pid)
        helper.sh("kill " .. pid)
        assert.equal(0, r.code, r.stderr)
        assert.is_true(running)
      end)
  end)

  describe("run", function()
    helper.it("returns code, signal, stdout and stderr", function()
      local r = process.run{ "sh", "-c", "echo out; echo err >&2; exit 3" }
      assert.equal(3, r.code)
      assert.is_nil(r.signal)
      assert.equal("out\n", r.stdout)
      assert.equal("err\n", r.stderr)
      r = process.run{ "sh", "-c", "kill -KILL $$" }
      assert.is_nil(r.code)
      assert.equal("SIGKILL", r.signal)
      r = process.run{ "tr", "a-z", "A-Z", input = "shout" }
      assert.equal("SHOUT", r.stdout)
    end)

    helper.it("on timeout, terminates the child and raises kind timeout with the output so far", function()
      local t0 = async.now()
      local err = raises("timeout", process.run,
        { "sh", "-c", "echo started; echo warn >&2; exec sleep 30", timeout = 0.3 })
      assert.equal("started\n", err.stdout)
      assert.equal("warn\n", err.stderr)
      assert.equal(0.3, err.seconds)
      assert.equal("SIGTERM", err.signal)
      assert.is_false(alive(err.pid))
      assert.is_true(async.now() - t0 < 5 * helper.SLOWDOWN)
    end)

    helper.it("a child that ignores SIGTERM gets SIGKILL after the grace period", function()
      local err = raises("timeout", process.run,
        { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", timeout = 0.3, grace = 0.2 })
      assert.equal("ready\n", err.stdout)
      assert.equal("SIGKILL", err.signal)
      assert.is_false(alive(err.pid))
    end)
  end)
end)
