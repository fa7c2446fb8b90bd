-- Error objects, predicates, user errors passing through unchanged, misuse messages, and
-- the report of failed tasks nobody awaited.
local helper = require("spec.helper")
local async = helper.async

local BARE = "attempt to yield across a C-call boundary"

-- the message is not Lua's bare "attempt to yield across a C-call boundary" (with or without
-- a position prefix) and says something about what was attempted
local function assert_clear(err)
  local msg = tostring(err)
  local stripped = msg:gsub("^[^\n]-:%d+: ", "")
  assert.not_equal(BARE, stripped, "bare message: " .. msg)
  assert.is_truthy(msg:find("task") or msg:find("await") or msg:find("yield") or msg:find("sleep"), msg)
  return msg
end

describe("runtime error objects", function()
  helper.it("Cancelled has kind, message and a readable tostring", function()
    local t = async.spawn(function() async.sleep(30) end)
    async.yield()
    t:cancel("a reason")
    local _, err = pcall(t.await, t)
    assert.equal("table", type(err))
    assert.equal("cancelled", err.kind)
    assert.is_string(err.message)
    assert.is_truthy(err.message:find("a reason", 1, true))
    local s = tostring(err)
    assert.is_falsy(s:match("^table: "), s)
    assert.is_truthy(s:find("a reason", 1, true), s)
    assert.is_true(async.is_cancelled(err))
    assert.is_false(async.is_timeout(err))
  end)

  helper.it("a timeout error has kind, message and a readable tostring", function()
    local _, err = pcall(async.timeout, 0.001, async.sleep, 30)
    assert.equal("table", type(err))
    assert.equal("timeout", err.kind)
    assert.is_string(err.message)
    local s = tostring(err)
    assert.is_falsy(s:match("^table: "), s)
    assert.is_truthy(s:find(err.message, 1, true), s)
    assert.is_true(async.is_timeout(err))
    assert.is_false(async.is_cancelled(err))
  end)

  it("is_cancelled and is_timeout are false for anything else", function()
    for _, v in ipairs({ "cancelled", "timeout", 42, true, {}, { kind = "other" }, print }) do
      assert.is_false(async.is_cancelled(v))
      assert.is_false(async.is_timeout(v))
    end
    assert.is_false(async.is_cancelled(nil))
    assert.is_false(async.is_timeout(nil))
  end)
end)

describe("user errors pass through unchanged", function()
  it("through await, gather and run, for tables, strings and other values", function()
    local tbl = { "mine" }
    for _, e in ipairs({ tbl, "exact", 42, false }) do
      local ok, err = pcall(async.run, function()
        local t = async.spawn(function() error(e, 0) end)
        local ok1, e1 = pcall(t.await, t)
        assert(not ok1 and rawequal(e1, e), "await changed the error")
        local ok2, e2 = pcall(async.gather, function() async.sleep(0) error(e, 0) end)
        assert(not ok2 and rawequal(e2, e), "gather changed the error")
        error(e, 0)
      end)
      assert.is_false(ok)
      assert.is_true(rawequal(e, err))
    end
  end)

  it('error("exact", 0) arrives as exactly "exact" at run', function()
    local ok, err = pcall(async.run, function()
      local t = async.spawn(function()
        local u = async.spawn(function() async.sleep(0.001) error("exact", 0) end)
        return u:await()
      end)
      return t:await()
    end)
    assert.is_false(ok)
    assert.equal("exact", err)
  end)
end)

describe("awaiting where it cannot work", function()
  it("outside a task raises a clear error", function()
    for _, op in ipairs({
      function() return async.sleep(0) end,
      function() return async.yield() end,
    }) do
      local ok, err = pcall(op)
      assert.is_false(ok)
      local msg = assert_clear(err)
      assert.is_truthy(msg:find("task") or msg:find("run"), msg)
    end
  end)

  helper.it("inside a table.sort comparator raises a clear error", function()
    local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
      async.sleep(0)
      return a < b
    end)
    assert.is_false(ok)
    assert_clear(err)
    assert.equal("ok", async.sleep(0.001, "ok")) -- the task still works
  end)

  helper.it("inside a string.gsub callback raises a clear error", function()
    local ok, err = pcall(string.gsub, "abc", ".", function(c)
      async.sleep(0)
      return c:upper()
    end)
    assert.is_false(ok)
    assert_clear(err)
    assert.equal("ok", async.sleep(0.001, "ok"))
  end)

  helper.it("inside a required chunk raises a clear error", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. helper.q(dir)))
    local name = "lasync_spec_awaiting_module"
    local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
    f:write('local async = require("lasync")\nasync.sleep(0)\nreturn {}\n')
    f:close()
    local saved = package.path
    package.path = dir .. "/?.lua;" .. package.path
    local ok, err = pcall(require, name)
    package.path = saved
    package.loaded[name] = nil
    os.execute("rm -rf " .. helper.q(dir))
    assert.is_false(ok)
    assert_clear(err)
    assert.equal("ok", async.sleep(0.001, "ok"))
  end)

  helper.it("inside a spawned task's sort comparator fails that task with a clear error", function()
    local t = async.spawn(function()
      table.sort({ 2, 1 }, function(a, b) async.yield() return a < b end)
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert_clear(err)
  end)
end)

describe("a failed task that nobody awaited", function()
  it("is reported once through warn, with its traceback", function()
    local r = helper.lua([[
      local async = require("lasync")
      async.run(function()
        async.spawn(function()
          async.sleep(0.001)
          error("unseen-failure-xyz")
        end)
        async.sleep(0.05)
        collectgarbage(); collectgarbage()
        async.sleep(0.01)
      end)
      collectgarbage(); collectgarbage()
      print("run returned")
    ]], "-W")
    assert.equal(0, r.code, r.stderr)
    assert.equal("run returned\n", r.stdout)
    assert.is_truthy(r.stderr:find("unseen-failure-xyz", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("traceback", 1, true), r.stderr)
    assert.equal(1, helper.count(r.stderr, "Lua warning: "), r.stderr)
  end)

  it("is reported when run ends even if it failed just before", function()
    local r = helper.lua([[
      local async = require("lasync")
      async.run(function()
        async.spawn(function() error("failed-at-the-end-abc") end)
        async.yield()
      end)
    ]], "-W")
    assert.equal(0, r.code, r.stderr)
    assert.is_truthy(r.stderr:find("failed-at-the-end-abc", 1, true), r.stderr)
    assert.equal(1, helper.count(r.stderr, "Lua warning: "), r.stderr)
  end)

  it("is not reported when it was awaited, nor for tasks cancelled at shutdown", function()
    local r = helper.lua([[
      local async = require("lasync")
      async.run(function()
        local t = async.spawn(function() error("awaited-failure") end)
        pcall(t.await, t)
        local g = async.spawn(function() async.sleep(0) error("gathered-failure") end)
        pcall(async.gather, g)
        async.spawn(function() async.sleep(30) end) -- cancelled by shutdown
        async.yield()
        collectgarbage(); collectgarbage()
      end)
      collectgarbage(); collectgarbage()
      print("clean")
    ]], "-W")
    assert.equal(0, r.code, r.stderr)
    assert.equal("clean\n", r.stdout)
    assert.equal("", r.stderr)
  end)
end)
