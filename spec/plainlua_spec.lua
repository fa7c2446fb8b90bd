-- The module from plain lua5.4 (no interpreter, no busted), and installed by luarocks.
local helper = require("spec.helper")

local q = helper.q

describe("plain lua5.4", function()
  it("runs async.run with package.path at lua/ and package.cpath at build/lib", function()
    local r = helper.lua([[
      local async = require("lasync")
      local a, b = async.run(function(x)
        local t = async.spawn(function() async.sleep(0.01) return x * 2 end)
        local r = async.gather({ t, function() return "fn" end })
        return r[1], r[2]
      end, 21)
      print(a, b, async.current_task() == nil)
      print(pcall(async.spawn, print))
    ]])
    assert.equal(0, r.code, r.stderr)
    local first, second = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
    assert.equal("42\tfn\ttrue", first)
    assert.matches("^false\t", second)
  end)

  it("exits with lua's error when async.run raises", function()
    local r = helper.lua([[
      local async = require("lasync")
      async.run(function() async.sleep(0) error("plain-failure", 0) end)
    ]])
    assert.equal(1, r.code)
    assert.is_truthy(r.stderr:find("plain-failure", 1, true), r.stderr)
  end)

  it("async.main returns the main function's results", function()
    local r = helper.lua([[
      local async = require("lasync")
      print(async.main(function(a, b) async.sleep(0.01) return a + b, "two" end, 40, 2))
      print("after main", async.current_task() == nil)
    ]])
    assert.equal(0, r.code, r.stderr)
    assert.equal("42\ttwo\nafter main\ttrue\n", r.stdout)
    assert.equal("", r.stderr)
  end)

  it("a script that calls async.main runs unchanged under the lasync interpreter", function()
    local body = [[
      local async = require("lasync")
      print(async.main(function(a) async.sleep(0.01) return a .. "!" end, "same"))
    ]]
    local plain = helper.lua(body)
    assert.equal(0, plain.code, plain.stderr)
    assert.equal("same!\n", plain.stdout)
    local r = helper.lasync(q(helper.script(body)))
    assert.equal(0, r.code, r.stderr)
    assert.equal(plain.stdout, r.stdout)
    -- inside a task it is a plain call: an error reaches the caller
    r = helper.lasync(q(helper.script([[
      local async = require("lasync")
      print(pcall(async.main, function() async.sleep(0) error("inside", 0) end))
    ]])))
    assert.equal(0, r.code, r.stderr)
    assert.equal("false\tinside\n", r.stdout)
  end)

  it("async.main prints where the main task failed, with its traceback, and exits 1", function()
    local r = helper.lua([[
      local async = require("lasync")
      local function deep_in_the_task()
        async.sleep(0)
        error("plain-failure")
      end
      async.main(function()
        deep_in_the_task()
      end)
      print("not reached")
    ]])
    assert.equal(1, r.code, r.stderr)
    assert.equal("", r.stdout)
    -- "lasync: <message>", then the task's own traceback (not lua5.4's outer stack)
    assert.matches("^lasync: [^\n]*:4: plain%-failure\nstack traceback:\n", r.stderr)
    assert.matches("in %a* ?'?deep_in_the_task'?", r.stderr)
    assert.matches("task 'main'", r.stderr)
    -- async.run still raises the error value unchanged (lua5.4 prints only the message)
    r = helper.lua([[
      local async = require("lasync")
      local e = setmetatable({}, { __tostring = function() return "the-object" end })
      local ok, err = pcall(async.run, function() async.sleep(0) error(e) end)
      print(ok, rawequal(err, e))
    ]])
    assert.equal("false\ttrue\n", r.stdout)
  end)

  it("async.main cancels the main task on Ctrl-C, runs its cleanup and exits 130", function()
    local cmd, path = helper.lua_command([[
      local async = require("lasync")
      async.main(function()
        local _ <close> = setmetatable({}, { __close = function(_, e)
          async.shielded(async.sleep, 0.05)  -- cleanup may await
          print("cleanup", async.is_cancelled(e))
        end })
        print("READY")
        io.stdout:flush()
        async.sleep(60)
        print("not reached")
      end)
      print("not reached either")
    ]])
    local r = helper.signal_run(cmd, "INT")
    os.remove(path)
    assert.equal(130, r.code, r.stderr)
    assert.equal("READY\ncleanup\ttrue\n", r.stdout)
    assert.equal("lasync: interrupted\n", r.stderr)
  end)

  it("async.main puts the SIGINT disposition back when it returns", function()
    local cmd, path = helper.lua_command([[
      local async = require("lasync")
      async.main(function() async.sleep(0) end)
      print("READY")
      io.stdout:flush()
      local t = os.time()
      while os.time() - t < 20 do end  -- busy, in lua5.4's own code
    ]])
    local r = helper.signal_run(cmd, "INT")
    os.remove(path)
    -- lua5.4's handler (which makes the running code raise "interrupted!") is back
    assert.equal(1, r.code, r.stderr)
    assert.matches("interrupted!", r.stderr, 1, true)
    assert.is_falsy(r.stderr:find("lasync:", 1, true), r.stderr)
  end)

  it("finishes a run whose main task leaves sleeping tasks behind", function()
    local r = helper.lua([[
      local async = require("lasync")
      local t
      print(async.run(function()
        t = async.spawn(function() async.sleep(60) end)
        async.sleep(0)
        return "left it"
      end))
      print(t:cancelled())
    ]])
    assert.equal(0, r.code, r.stderr)
    assert.equal("left it\ntrue\n", r.stdout)
  end)
end)

describe("the rockspec", function()
  it("installs with luarocks into a tree (offline, --deps-mode=none) and lasync loads from there", function()
    local rockspec = helper.ROOT .. "/lasync-scm-1.rockspec"
    local f = io.open(rockspec)
    assert.is_truthy(f, "missing lasync-scm-1.rockspec")
    f:close()
    local tmp = os.tmpname()
    os.remove(tmp)
    local tree = tmp .. "/tree"
    local src = tmp .. "/src"
    -- build from a copy so the checkout is not touched
    local r = helper.sh(table.concat({
      "set -e",
      "mkdir -p " .. q(src),
      "tar -C " .. q(helper.ROOT) .. " --exclude=./build --exclude=./.git -cf - . | tar -C "
        .. q(src) .. " -xf -",
      "cd " .. q(src),
      "env -u LD_PRELOAD timeout 300 luarocks --lua-version=5.4 --tree=" .. q(tree)
        .. " make --deps-mode=none lasync-scm-1.rockspec",
    }, "\n"))
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local code = string.format([[
      package.path = %q
      package.cpath = %q
      local async = require("lasync")
      print(async.run(function() return async.sleep(0.01, "from the tree") end))
      print(package.searchpath("lasync", package.path) ~= nil)
    ]], tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua",
      tree .. "/lib/lua/5.4/?.so")
    r = helper.sh("cd /tmp && timeout 30 lua5.4 -e " .. q(code))
    os.execute("rm -rf " .. q(tmp))
    assert.equal(0, r.code, r.stderr)
    assert.equal("from the tree\ntrue\n", r.stdout)
  end)
end)
