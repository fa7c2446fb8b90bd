-- async.fs: files and directories on libuv's thread pool.
local helper = require("spec.helper")
local async = helper.async
local fs = async.fs

local raises = helper.expect_kind

local dir  -- a fresh temporary directory per test

local function path(name) return dir .. "/" .. name end

local function is_root()
  local p = io.popen("id -u")
  local id = p:read("l")
  p:close()
  return id == "0"
end

describe("async.fs", function()
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. helper.q(dir)))
  end)
  after_each(function()
    os.execute("chmod -R u+rwx " .. helper.q(dir) .. " 2>/dev/null; rm -rf " .. helper.q(dir))
  end)

  describe("whole files", function()
    helper.it("write_file then read_file round-trips any bytes, also large ones", function()
      local data = "line 1\nbinary \0\1\2\255 bytes\r\n"
      assert.is_true(fs.write_file(path("a.bin"), data))
      assert.equal(data, fs.read_file(path("a.bin")))
      local big = string.rep("0123456789abcdef", 1 << 16) .. "tail"  -- 1 MiB and a bit
      fs.write_file(path("big"), big)
      assert.equal(big, fs.read_file(path("big")))
      fs.write_file(path("empty"), "")
      assert.equal("", fs.read_file(path("empty")))
    end)

    helper.it("write_file replaces the content; append_file adds to it (and creates it)", function()
      fs.write_file(path("f"), "a long first content")
      fs.write_file(path("f"), "short")
      assert.equal("short", fs.read_file(path("f")))
      fs.append_file(path("f"), "+more", "+and more")
      assert.equal("short+more+and more", fs.read_file(path("f")))
      fs.append_file(path("new"), "created")
      assert.equal("created", fs.read_file(path("new")))
    end)

    helper.it("a missing file raises kind 'fs' with code ENOENT, the path and a readable message", function()
      local err = raises("fs", fs.read_file, path("missing"))
      assert.equal("ENOENT", err.code)
      assert.equal(path("missing"), err.path)
      assert.equal(2, err.errno)
      assert.matches("^fs: ENOENT: no such file or directory", tostring(err))
      assert.is_truthy(tostring(err):find(path("missing"), 1, true))
    end)

    helper.it("fs.lines reads a file line by line and closes it at the end of the loop", function()
      fs.write_file(path("l"), "one\ntwo\n\nfour")
      local got = {}
      for line in fs.lines(path("l")) do got[#got + 1] = line end
      assert.same({ "one", "two", "", "four" }, got)
      local n = 0
      for line in fs.lines(path("l"), "L") do
        n = n + 1
        if n == 2 then
          assert.equal("two\n", line)
          break  -- the file is closed too
        end
      end
      assert.equal(2, n)
    end)

    helper.it("many concurrent reads all complete with the right content", function()
      for i = 1, 20 do fs.write_file(path("f" .. i), ("file %d\n"):format(i):rep(i * 100)) end
      local tasks = {}
      for i = 1, 200 do
        local n = (i - 1) % 20 + 1
        tasks[i] = async.spawn(function() return fs.read_file(path("f" .. n)), n end)
      end
      for i = 1, 200 do
        local data, n = tasks[i]:await()
        assert.equal(("file %d\n"):format(n):rep(n * 100), data)
      end
    end)
  end)

  describe("stat, exists, list_dir", function()
    helper.it("stat gives type, size, mode, perm and times", function()
      local t0 = os.time()
      fs.write_file(path("s"), "12345")
      local st = fs.stat(path("s"))
      assert.equal("file", st.type)
      assert.equal(5, st.size)
      assert.is_true(math.abs(st.mtime - t0) < 60, tostring(st.mtime))
      assert.is_number(st.atime)
      assert.is_number(st.ctime)
      assert.equal(st.mode & 511, st.perm & 511)
      assert.equal("directory", fs.stat(dir).type)
    end)

    helper.it("stat follows links unless follow = false", function()
      fs.write_file(path("target"), "x")
      assert(os.execute("ln -s target " .. helper.q(path("link"))))
      assert.equal("file", fs.stat(path("link")).type)
      assert.equal("link", fs.stat(path("link"), { follow = false }).type)
    end)

    helper.it("exists is true for files and directories, false for missing paths", function()
      fs.write_file(path("e"), "")
      assert.is_true(fs.exists(path("e")))
      assert.is_true(fs.exists(dir))
      assert.is_false(fs.exists(path("nope")))
      assert.is_false(fs.exists(path("e") .. "/below-a-file"))  -- ENOTDIR
    end)

    helper.it("list_dir lists names and types, sorted, without . and ..", function()
      fs.write_file(path("b.txt"), "")
      fs.mkdir(path("a-dir"))
      assert(os.execute("ln -s b.txt " .. helper.q(path("c-link"))))
      assert.same({
        { name = "a-dir", type = "directory" },
        { name = "b.txt", type = "file" },
        { name = "c-link", type = "link" },
      }, fs.list_dir(dir))
      assert.same({}, fs.list_dir(path("a-dir")))
      assert.equal("ENOTDIR", raises("fs", fs.list_dir, path("b.txt")).code)
    end)
  end)

  describe("directories, remove, rename", function()
    helper.it("mkdir makes one directory; EEXIST when it exists, ENOENT without its parent", function()
      assert.is_true(fs.mkdir(path("d")))
      assert.equal("directory", fs.stat(path("d")).type)
      local err = raises("fs", fs.mkdir, path("d"))
      assert.equal("EEXIST", err.code)
      assert.equal(path("d"), err.path)
      assert.equal("ENOENT", raises("fs", fs.mkdir, path("x/y")).code)
    end)

    helper.it("mkdir{parents = true} makes the missing parents and accepts an existing directory", function()
      fs.mkdir(path("p/q/r/"), { parents = true })
      assert.equal("directory", fs.stat(path("p/q/r")).type)
      fs.mkdir(path("p/q"), { parents = true })
      fs.write_file(path("p/file"), "")
      assert.equal("EEXIST", raises("fs", fs.mkdir, path("p/file"), { parents = true }).code)
      assert.equal("ENOTDIR", raises("fs", fs.mkdir, path("p/file/sub"), { parents = true }).code)
    end)

    helper.it("mkdir{parents = true} and remove raise a deadline's timeout, never an fs error", function()
      fs.mkdir(path("there"))
      local function check(fn, ...)
        for i = 1, 200 do
          local ok, err = pcall(async.timeout, (i % 40) * 0.000005 * helper.SLOWDOWN, fn, ...)
          assert.is_true(ok or async.is_timeout(err), tostring(err))
          if not fs.exists(path("there")) then fs.mkdir(path("there")) end
        end
      end
      check(fs.mkdir, path("there"), { parents = true })  -- mkdir (EEXIST), then stat
      check(fs.remove, path("there"))                     -- unlink (EISDIR), then stat
    end)

    helper.it("mkdir takes a permission mode", function()
      fs.mkdir(path("m"), { mode = tonumber("700", 8) })
      assert.equal(tonumber("700", 8), fs.stat(path("m")).perm)
    end)

    helper.it("mkdir{parents = true, mode = m} gives m to the last directory only", function()
      fs.mkdir(path("ref"))
      local default = fs.stat(path("ref")).perm
      assert.is_true(fs.mkdir(path("p/q/r"), { parents = true, mode = tonumber("555", 8) }))
      assert.equal(tonumber("555", 8), fs.stat(path("p/q/r")).perm)
      assert.equal(default, fs.stat(path("p")).perm)
      assert.equal(default, fs.stat(path("p/q")).perm)
    end)

    helper.it("remove deletes a file or an empty directory, not a full one unless recursive", function()
      fs.write_file(path("f"), "")
      fs.remove(path("f"))
      assert.is_false(fs.exists(path("f")))
      fs.mkdir(path("d"))
      fs.remove(path("d"))
      assert.is_false(fs.exists(path("d")))
      fs.mkdir(path("t/u/v"), { parents = true })
      fs.write_file(path("t/u/v/f"), "x")
      fs.write_file(path("t/g"), "x")
      assert(os.execute("ln -s " .. helper.q(dir) .. " " .. helper.q(path("t/u/up"))))
      assert.equal("ENOTEMPTY", raises("fs", fs.remove, path("t")).code)
      fs.remove(path("t"), { recursive = true })
      assert.is_false(fs.exists(path("t")))
      assert.is_true(fs.exists(dir))  -- the link was removed, not followed
      assert.equal("ENOENT", raises("fs", fs.remove, path("t")).code)
    end)

    helper.it("rename moves a file; a failure names both paths", function()
      fs.write_file(path("from"), "content")
      fs.rename(path("from"), path("to"))
      assert.is_false(fs.exists(path("from")))
      assert.equal("content", fs.read_file(path("to")))
      local err = raises("fs", fs.rename, path("from"), path("x"))
      assert.equal("ENOENT", err.code)
      assert.equal(path("from"), err.path)
      assert.equal(path("x"), err.dest)
    end)

    helper.it("error codes: EISDIR, ENOTDIR, and EACCES for an unreadable file", function()
      fs.mkdir(path("d"))
      assert.equal("EISDIR", raises("fs", fs.write_file, path("d"), "x").code)
      fs.write_file(path("f"), "")
      assert.equal("ENOTDIR", raises("fs", fs.read_file, path("f") .. "/x").code)
      fs.write_file(path("secret"), "x")
      assert(os.execute("chmod 000 " .. helper.q(path("secret"))))
      if not is_root() then
        assert.equal("EACCES", raises("fs", fs.read_file, path("secret")).code)
        return
      end
      -- root reads anything: show it as an unprivileged user, in a child interpreter. The
      -- checkout may be in a directory that user cannot enter (a mktemp -d clone): the child
      -- runs from a world-readable copy of the interpreter and the Lua modules.
      local copy = helper.sh("d=$(mktemp -d) && mkdir \"$d/build\" && cp " .. helper.q(helper.LASYNC)
        .. " \"$d/build/\" && cp -r " .. helper.q(helper.ROOT .. "/lua") .. " \"$d/\" && "
        .. "chmod -R a+rX \"$d\" && echo \"$d\"")
      assert.equal(0, copy.code, copy.stderr)
      local copydir = copy.stdout:gsub("%s+$", "")
      local r = helper.sh("command -v setpriv >/dev/null || exit 77; setpriv --reuid=65534 "
        .. "--regid=65534 --clear-groups " .. helper.q(copydir .. "/build/lasync") .. " -e "
        .. helper.q("local ok, e = pcall(require('lasync').fs.read_file, "
          .. ("%q"):format(path("secret")) .. ") print(ok, e.code, e.path)"))
      helper.sh("rm -rf " .. helper.q(copydir))
      if r.code == 77 then return end  -- no setpriv here
      assert.equal(0, r.code, r.stderr)
      assert.equal("false\tEACCES\t" .. path("secret") .. "\n", r.stdout)
    end)
  end)

  describe("File objects", function()
    helper.it("read takes io's formats: l, L, n, a and byte counts, several at once", function()
      fs.write_file(path("r"), "first\r\nsecond\n 42 -0x1F 2.5e3 x\nrest of it")
      local f <close> = fs.open(path("r"))
      assert.equal("first\r", f:read())
      assert.equal("second\n", f:read("L"))
      assert.same({ 42, -31, 2500.0 }, { f:read("n", "n", "n") })
      assert.equal("", f:read(0))
      assert.same({ " x", "re" }, { f:read("l", 2) })
      assert.equal("st of it", f:read("a"))
      assert.equal("", f:read("a"))
      assert.is_nil(f:read("l"))
      assert.is_nil(f:read(1))
      assert.is_nil(f:read(0))
    end)

    helper.it("read('n') returns nil (and stops) when there is no number", function()
      fs.write_file(path("n"), "abc")
      local f <close> = fs.open(path("n"))
      local a, b = f:read("n", "a")
      assert.is_nil(a)
      assert.is_nil(b)
    end)

    helper.it("lines iterates with formats, across read-buffer boundaries", function()
      local parts = {}
      for i = 1, 20000 do parts[i] = ("line %d %s"):format(i, ("x"):rep(i % 13)) end
      fs.write_file(path("many"), table.concat(parts, "\n") .. "\n")
      local f <close> = fs.open(path("many"))
      local got = {}
      for line in f:lines() do got[#got + 1] = line end
      assert.equal(20000, #got)
      assert.equal(table.concat(parts, "\n"), table.concat(got, "\n"))
      f:seek("set")
      local chunks = {}
      for c in f:lines(50000) do chunks[#chunks + 1] = c end
      assert.equal(table.concat(parts, "\n") .. "\n", table.concat(chunks))
    end)

    helper.it("write returns the file for chaining; seek(whence, offset) as in io", function()
      local f <close> = fs.open(path("w"), "w+")
      assert.equal(f, f:write("hello", " ", 42, "\n"):write("world"))
      assert.equal(14, f:seek())
      assert.equal(0, f:seek("set"))
      assert.equal("hello", f:read(5))
      assert.equal(6, f:seek("cur", 1))
      assert.equal("42", f:read(2))
      assert.equal(11, f:seek("end", -3))
      assert.equal("rld", f:read("a"))
      f:seek("set", 6)
      f:read(1)       -- read-ahead is dropped: the write goes to the logical position
      f:write("XY")
      f:seek("set")
      assert.equal("hello 4XYworld", f:read("l"))  -- "2\n" was overwritten
    end)

    helper.it("modes: r+ updates in place, a appends, a+ reads too, wx refuses an existing file", function()
      fs.write_file(path("m"), "abcdef")
      local f = fs.open(path("m"), "r+b")
      f:write("XY")
      f:close()
      assert.equal("XYcdef", fs.read_file(path("m")))
      f = fs.open(path("m"), "a")
      f:seek("set")
      f:write("++")
      f:close()
      assert.equal("XYcdef++", fs.read_file(path("m")))
      f = fs.open(path("m"), "a+")
      assert.equal("XYcdef++", f:read("a"))
      f:write("!")
      f:seek("set")
      assert.equal("XYcdef++!", f:read("a"))
      f:close()
      assert.equal("EEXIST", raises("fs", fs.open, path("m"), "wx").code)
      fs.open(path("fresh"), "wx"):close()
      assert.is_true(fs.exists(path("fresh")))
    end)

    helper.it("reading a write-only file or writing a read-only one raises EBADF", function()
      local w <close> = fs.open(path("wo"), "w")
      assert.equal("EBADF", raises("fs", w.read, w).code)
      local r <close> = fs.open(path("wo"), "r")
      local err = raises("fs", r.write, r, "x")
      assert.equal("EBADF", err.code)
      assert.equal(path("wo"), err.path)
    end)

    helper.it("close, <close> and a closed file's methods", function()
      fs.write_file(path("c"), "x")
      local f = fs.open(path("c"))
      assert.matches("lasync.fs.File", tostring(f))
      assert.is_true(f:close())
      assert.matches("closed", tostring(f))
      helper.expect_plain_error({ "closed file" }, f.read, f)
      helper.expect_plain_error({ "closed file" }, f.close, f)
      local g
      do
        local h <close> = fs.open(path("c"))
        g = h
      end
      helper.expect_plain_error({ "closed file" }, g.write, g, "x")
    end)
  end)

  describe("cancellation and concurrency", function()
    helper.it("a cancelled read raises Cancelled and loses no data: the next read goes on", function()
      local data = ("0123456789"):rep(100000)
      fs.write_file(path("big"), data)
      local f <close> = fs.open(path("big"))
      local first = f:read(10)
      local t = helper.started(f.read, f, "a")
      t:cancel()
      helper.expect_cancelled(t)
      assert.equal(data, first .. f:read("a"))
    end)

    helper.it("a cancelled read of several formats consumes nothing", function()
      fs.write_file(path("two"), "head\n" .. ("0123456789"):rep(100000))
      local f <close> = fs.open(path("two"))
      local t = helper.started(f.read, f, "l", "a")
      t:cancel()
      helper.expect_cancelled(t)
      local head, rest = f:read("l", "a")
      assert.equal("head", head)
      assert.equal(1000000, #rest)
    end)

    helper.it("every path call is cancellable; the program goes on normally", function()
      fs.write_file(path("x"), "x")
      local calls = {
        function() return fs.read_file(path("x")) end,
        function() return fs.write_file(path("y"), "y") end,
        function() return fs.stat(path("x")) end,
        function() return fs.list_dir(dir) end,
        function() return fs.mkdir(path("z")) end,
        function() return fs.exists(path("x")) end,
        function() return fs.open(path("x")) end,
        function() return fs.rename(path("x"), path("x2")) end,
      }
      for _, call in ipairs(calls) do
        local t = helper.started(call)
        t:cancel()
        helper.expect_cancelled(t)
      end
      helper.expect_timeout(0, fs.read_file, path("nothing-to-see"))
      assert.is_table(fs.stat(dir))
    end)

    helper.it("a file dropped while a cancelled read is pending is cleaned up", function()
      fs.write_file(path("big"), ("x"):rep(1 << 20))
      for _ = 1, 20 do
        local t = helper.started(function() fs.open(path("big")):read("a") end)
        t:cancel()
        helper.expect_cancelled(t)
      end
      collectgarbage()
      assert.equal(1 << 20, #fs.read_file(path("big")))
    end)

    helper.it("tasks still waiting on files when the run ends are cancelled and cleaned up", function()
      fs.write_file(path("big"), ("z"):rep(1 << 20))
      local f = fs.open(path("big"))
      async.spawn(f.read, f, "a")
      async.spawn(fs.read_file, path("big"))
      async.spawn(fs.stat, dir)
      async.spawn(fs.open, path("big"))
      async.yield()
    end)

    helper.it("a file is used by one task at a time: a second reader raises", function()
      fs.write_file(path("one"), ("y"):rep(1 << 20))
      local f <close> = fs.open(path("one"))
      local t = helper.started(f.read, f, "a")
      helper.expect_plain_error({ "another task" }, f.read, f, 1)
      assert.equal(1 << 20, #t:await())
    end)

    helper.it("a file stays busy until its reader resumed: no other task takes its data", function()
      fs.write_file(path("lines"), "a\nb\nc\nd\n")
      local f <close> = fs.open(path("lines"))
      local started, a_done = false, false
      local b = async.spawn(function()
        while not started do async.sleep(0) end
        while true do  -- tries in every turn, the one where A's read completed included
          local ok, x, y = pcall(f.read, f, "l", "l")
          if ok then return a_done, x, y end
          assert.matches("another task is already using this file", tostring(x), 1, true)
          async.sleep(0)
        end
      end)
      local a = async.spawn(function()
        started = true
        local line = f:read("l")
        a_done = true
        return line
      end)
      assert.equal("a", helper.finish(a))
      local was_done, x, y = helper.finish(b)
      assert.is_true(was_done)
      assert.equal("b", x)
      assert.equal("c", y)
    end)

    helper.it("closing a file while another task reads or writes it releases the descriptor", function()
      local function nfds() return #fs.list_dir("/proc/self/fd") end
      fs.write_file(path("big"), ("x"):rep(100000))
      local before = nfds()
      for i = 1, 10 do
        local f = fs.open(path("big"), "r+")
        local t = async.spawn(function()
          if i % 2 == 0 then return pcall(f.write, f, ("y"):rep(100000)) end
          return pcall(f.read, f, "a")
        end)
        async.sleep(0)  -- t now waits on its request
        f:close()
        local ok, err = helper.finish(t)
        if not ok then assert.matches("closed file", tostring(err), 1, true) end
      end
      assert.equal(before, nfds())
    end)

    helper.it("a cancelled write that is still queued writes all of its data", function()
      -- every thread of the pool blocks opening a FIFO that has no writer yet: the write queues
      local n = tonumber(os.getenv("UV_THREADPOOL_SIZE")) or 4
      local f = fs.open(path("out"), "w")
      local fifos, openers = {}, {}
      for i = 1, n do
        fifos[i] = path("fifo" .. i)
        assert(os.execute("mkfifo " .. helper.q(fifos[i])))
        openers[i] = async.spawn(fs.open, fifos[i])
      end
      async.sleep(0)
      local w = helper.started(f.write, f, "hello", " world")
      w:cancel()
      helper.expect_cancelled(w)
      for i = 1, n do  -- each open for writing meets a blocked open for reading
        local wf = assert(io.open(fifos[i], "w"))
        wf:close()
      end
      for i = 1, n do helper.finish(openers[i]):close() end
      f:write("!")  -- waits until the abandoned write ended
      f:close()
      assert.equal("hello world!", fs.read_file(path("out")))
    end)
  end)

  describe("work stuck on the thread pool", function()
    -- a cancelled open of a FIFO that nobody opens for writing never ends on its thread
    local function fifo_script(body)
      local fifo = path("fifo")
      assert(os.execute("mkfifo " .. helper.q(fifo)))
      return helper.script(("local async = require('lasync')\nlocal FIFO = %q\n"):format(fifo) .. body)
    end

    it("does not keep the interpreter from exiting, with the script's exit code", function()
      local script = fifo_script([[
print(pcall(async.timeout, 0.05, async.fs.open, FIFO))
print(pcall(async.timeout, 0.05, async.fs.read_file, FIFO))
print("main done")
os.exit(3)
]])
      local r = helper.lasync(helper.q(script))
      assert.equal(3, r.code, r.stderr)
      assert.equal("false\ttimeout: timed out after 0.05 s\nfalse\ttimeout: timed out after 0.05 s\n"
        .. "main done\n", r.stdout)
    end)

    it("does not hide a deadlock, and async.run in plain Lua returns and the process exits", function()
      local script = fifo_script([[
async.run(function()
  print(pcall(async.timeout, 0.05, async.fs.open, FIFO))
  local never = async.Future()
  local ok, err = pcall(never.await, never)
  print(ok, tostring(err):match("deadlock") ~= nil)
end)
print("after run")
]])
      local r = helper.lua(("dofile(%q)"):format(script))
      assert.equal(0, r.code, r.stderr)
      assert.equal("false\ttimeout: timed out after 0.05 s\nfalse\ttrue\nafter run\n", r.stdout)
    end)
  end)

  describe("misuse", function()
    helper.it("bad arguments raise plain errors", function()
      helper.expect_plain_error({ "string expected" }, fs.read_file, nil)
      helper.expect_plain_error({ "string expected" }, fs.write_file, path("x"), {})
      helper.expect_plain_error({ "invalid mode" }, fs.open, path("x"), "rw")
      helper.expect_plain_error({ "zero byte" }, fs.stat, "a\0b")
      helper.expect_plain_error({ "options must be a table" }, fs.mkdir, path("x"), true)
      fs.write_file(path("x"), "")
      local f <close> = fs.open(path("x"))
      helper.expect_plain_error({ "invalid format" }, f.read, f, "z")
      helper.expect_plain_error({ "non-negative" }, f.read, f, -1)
      helper.expect_plain_error({ "invalid option" }, f.seek, f, "middle")
    end)

    helper.it("argument errors name the function and the position the caller sees", function()
      local function expect(msg, fn, ...)
        local ok, err = pcall(fn, ...)
        assert.is_false(ok)
        assert.matches(msg, err, 1, true)
      end
      expect("bad argument #3 to 'write_file' (string expected, got table)", fs.write_file, path("x"),
        "a", {})
      expect("bad argument #4 to 'append_file'", fs.append_file, path("x"), "a", "b", true)
      expect("bad argument #1 to 'stat' (path contains a zero byte)", fs.stat, "a\0b")
      expect("fs.mkdir: option 'mode' must be a permission mode", fs.mkdir, path("m"), { mode = "x" })
      expect("bad argument #2 to 'open' (invalid mode", fs.open, path("x"), "wxx")
      expect("bad argument #2 to 'rename' (string expected, got table)", fs.rename, path("x"), {})
      fs.write_file(path("x"), "abc\n")
      expect("bad argument #2 to 'lines' (invalid format)", fs.lines, path("x"), "z")
    end)

    helper.it("fs.lines closes the file when its formats are bad", function()
      fs.write_file(path("x"), "abc\n")
      local function nfds() return #fs.list_dir("/proc/self/fd") end
      local before = nfds()
      collectgarbage("stop")  -- the File must be closed by fs.lines, not by the collector
      for _ = 1, 5 do assert.is_false((pcall(fs.lines, path("x"), "z"))) end
      local after = nfds()
      collectgarbage("restart")
      assert.equal(before, after)
    end)

    helper.it("File metamethods called with something else raise instead of crashing", function()
      local mt = getmetatable(fs.open("/dev/null"))
      for _, name in ipairs({ "__tostring", "__close", "__gc" }) do
        helper.expect_plain_error({ "lasync.fs.File expected" }, mt[name], {})
        helper.expect_plain_error({ "lasync.fs.File expected" }, mt[name], io.stdout)
      end
    end)

    it("calls outside a task raise a plain error", function()
      local ok, err = pcall(fs.read_file, "/etc/hostname")
      assert.is_false(ok)
      assert.matches("must be called from a task", err)
    end)
  end)

  after_each(helper.cleanup)
end)
