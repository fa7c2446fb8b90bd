-- The `lasync` interpreter, run as a subprocess.
local helper = require("spec.helper")

local q = helper.q

describe("the lasync interpreter", function()
  it("runs a script as the main task with top-level await and exits 0", function()
    local path = helper.script([[
local async = require("lasync")
local function fetch(n) async.sleep(0.02); return n * 2 end
local t = async.spawn(fetch, 1)
print(t:await())
print(async.gather(function() return fetch(2) end, async.spawn(fetch, 3)))
print(async.current_task():name())
]])
    local r = helper.lasync(q(path))
    assert.equal("", r.stderr)
    assert.equal(0, r.code)
    assert.equal("2\n4\t6\nmain\n", r.stdout)
  end)

  it("sets arg and ... like lua does", function()
    local path = helper.script([[
print(arg[0], arg[1], arg[2], #arg, select("#", ...), ...)
print(arg[-1] ~= nil and arg[-1]:match("lasync$") ~= nil)
]])
    local r = helper.lasync(q(path) .. " one 'two words'")
    assert.equal(0, r.code, r.stderr)
    assert.equal(path .. "\tone\ttwo words\t2\t2\tone\ttwo words\ntrue\n", r.stdout)
  end)

  it("runs -e statements, which may await", function()
    local r = helper.lasync([[-e "local a = require('lasync') a.sleep(0.01) print('e ok', 1 + 1)"]])
    assert.equal(0, r.code, r.stderr)
    assert.equal("e ok\t2\n", r.stdout)
  end)

  it("runs -e before a script, in the same state", function()
    local path = helper.script("print(X)\n")
    local r = helper.lasync([[-e "X = 'from e'" ]] .. q(path))
    assert.equal(0, r.code, r.stderr)
    assert.equal("from e\n", r.stdout)
  end)

  it("runs the script from stdin with -", function()
    local r = helper.lasync("-", [[
local async = require("lasync")
async.sleep(0.01)
print("stdin ok", ...)
]])
    assert.equal(0, r.code, r.stderr)
    assert.equal("stdin ok\n", r.stdout)
  end)

  it("prints its version with -v and exits 0", function()
    local r = helper.lasync("-v")
    assert.equal(0, r.code, r.stderr)
    assert.is_truthy((r.stdout .. r.stderr):find("lasync"), r.stdout .. r.stderr)
  end)

  it("finds its Lua modules when run from another directory", function()
    local r = helper.sh("cd /tmp && unset LUA_PATH LUA_PATH_5_4 LUA_CPATH LUA_CPATH_5_4 && "
      .. "timeout 30 " .. q(helper.LASYNC)
      .. [[ -e "local a = require('lasync') print(a.run ~= nil, a.sleep(0, 'found'))"]])
    assert.equal(0, r.code, r.stderr)
    assert.equal("true\tfound\n", r.stdout)
  end)

  it("finds its Lua modules where make install put them #slow", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    local src, prefix = tmp .. "/src", tmp .. "/prefix"
    -- build and install from a copy, then delete the copy: only the installed files remain
    local r = helper.sh(table.concat({
      "set -e",
      "mkdir -p " .. q(src),
      "tar -C " .. q(helper.ROOT) .. " --exclude=./build --exclude=./build-asan --exclude=./.git"
        .. " -cf - . | tar -C " .. q(src) .. " -xf -",
      "env -u LD_PRELOAD timeout 600 make -s -C " .. q(src) .. " install PREFIX=" .. q(prefix),
      "rm -rf " .. q(src),
    }, "\n"))
    assert.equal(0, r.code, r.stdout .. r.stderr)
    r = helper.sh("cd / && unset LUA_PATH LUA_PATH_5_4 LUA_CPATH LUA_CPATH_5_4 && timeout 30 "
      .. q(prefix .. "/bin/lasync")
      .. [[ -e "local a = require('lasync') print(a.sleep(0.001, 'installed'))"]])
    os.execute("rm -rf " .. q(tmp))
    assert.equal(0, r.code, r.stderr)
    assert.equal("installed\n", r.stdout)
  end)

  it("exits 1 with 'lasync: <message>' and the traceback when the main task fails", function()
    local path = helper.script([[
local async = require("lasync")
local function deeper()
  async.sleep(0.001)
  error("script failure 123")
end
deeper()
]])
    local r = helper.lasync(q(path))
    assert.equal(1, r.code)
    assert.equal("", r.stdout)
    assert.matches("^lasync: [^\n]*script failure 123", r.stderr)
    assert.is_truthy(r.stderr:find(":4:", 1, true), r.stderr) -- the failing line
    assert.is_truthy(r.stderr:find("traceback", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("deeper", 1, true), r.stderr)
  end)

  it("uses __tostring of error objects in the message", function()
    local r = helper.lasync([[-e "local a = require('lasync') a.timeout(0.01, a.sleep, 10)"]])
    assert.equal(1, r.code)
    assert.matches("^lasync: ", r.stderr)
    assert.is_falsy(r.stderr:match("^lasync: table: "), r.stderr)
    assert.is_truthy(r.stderr:lower():find("time", 1, true), r.stderr)
  end)

  it("exits 1 with 'lasync:' for a syntax error or a missing script", function()
    local r = helper.lasync([[-e "this is not lua"]])
    assert.equal(1, r.code)
    assert.matches("^lasync: ", r.stderr)
    r = helper.lasync("/nonexistent/script.lua")
    assert.equal(1, r.code)
    assert.matches("^lasync: ", r.stderr)
  end)

  it("reports a failed task nobody awaited through warnings, which are on by default", function()
    local path = helper.script([[
local async = require("lasync")
async.spawn(function() error("orphan-failure-77") end)
async.sleep(0.02)
print("main done")
]])
    local r = helper.lasync(q(path))
    assert.equal(0, r.code, r.stderr)
    assert.equal("main done\n", r.stdout)
    assert.is_truthy(r.stderr:find("orphan-failure-77", 1, true), r.stderr)
  end)

  it("cancels tasks still running when the script ends, runs their cleanup and exits 0", function()
    local path = helper.script([[
local async = require("lasync")
async.spawn(function()
  local _ <close> = setmetatable({}, { __close = function() print("leftover cleanup") end })
  async.sleep(60)
end)
async.sleep(0.01)
print("script end")
]])
    local t0 = os.time()
    local r = helper.lasync(q(path))
    assert.equal(0, r.code, r.stderr)
    assert.equal("script end\nleftover cleanup\n", r.stdout)
    assert.is_true(os.time() - t0 < 20)
  end)

  it("honours os.exit", function()
    local r = helper.lasync([[-e "require('lasync').sleep(0.001) os.exit(3)"]])
    assert.equal(3, r.code, r.stderr)
  end)

  it("cancels the main task on SIGINT, runs the cleanup and exits 130", function()
    local path = helper.script([[
local async = require("lasync")
local child = async.spawn(function()
  local _ <close> = setmetatable({}, { __close = function() print("child cleanup") end })
  async.sleep(60)
end)
local _ <close> = setmetatable({}, { __close = function(_, e)
  async.shielded(async.sleep, 0.05) -- cleanup may await
  print("main cleanup", async.is_cancelled(e))
end })
print("READY")
io.stdout:flush()
async.sleep(60)
print("not reached")
]])
    local r = helper.signal_run(q(helper.LASYNC) .. " " .. q(path), "INT")
    assert.equal(130, r.code, r.stderr)
    assert.is_truthy(r.stdout:find("main cleanup\ttrue", 1, true), r.stdout)
    assert.is_truthy(r.stdout:find("child cleanup", 1, true), r.stdout)
    assert.is_falsy(r.stdout:find("not reached", 1, true), r.stdout)
  end)

  it("prints a task dump to stderr on SIGQUIT and keeps running", function()
    local path = helper.script([[
local async = require("lasync")
local t = async.spawn(function() async.sleep(60) end)
t:set_name("quit-dump-sleeper")
async.sleep(0)
print("READY")
io.stdout:flush()
async.sleep(1)
print("still running")
t:cancel()
]])
    local r = helper.signal_run(q(helper.LASYNC) .. " " .. q(path), "QUIT")
    assert.equal(0, r.code, r.stderr)
    assert.equal("READY\nstill running\n", r.stdout)
    assert.is_truthy(r.stderr:find("quit-dump-sleeper", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("main", 1, true), r.stderr)
  end)

  describe("-i", function()
    it("runs a REPL in which a line can await, with async preloaded", function()
      local r = helper.lasync("-i", table.concat({
        "async.sleep(0.01)",
        "print('after sleep', 1 + 1)",
        "t = async.spawn(function() async.sleep(0.01) return 42 end)",
        "print('awaited', t:await())",
        "",
      }, "\n"))
      assert.equal(0, r.code, r.stderr)
      assert.is_truthy(r.stdout:find("after sleep\t2", 1, true), r.stdout)
      assert.is_truthy(r.stdout:find("awaited\t42", 1, true), r.stdout)
    end)

    it("keeps going after a line fails", function()
      local r = helper.lasync("-i", "error('line failure')\nprint('next line')\n")
      assert.equal(0, r.code, r.stderr)
      assert.is_truthy(r.stderr:find("line failure", 1, true), r.stderr)
      assert.is_truthy(r.stdout:find("next line", 1, true), r.stdout)
    end)
  end)

  after_each(helper.cleanup)
end)
