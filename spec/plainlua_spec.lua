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
