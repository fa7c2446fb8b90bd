-- async.Future: settle once, await, result, cancel, on_done.
local helper = require("spec.helper")
local async = helper.async

describe("async.Future", function()
  helper.it("set_result wakes the awaiter with all the values", function()
    local f = async.Future()
    assert.is_false(f:done())
    local t = async.spawn(function() return f:await() end)
    async.sleep(0.005)
    assert.is_false(t:done())
    f:set_result(1, nil, "three")
    assert.is_true(f:done())
    assert.same({ n = 3, 1, nil, "three" }, table.pack(t:await()))
    -- awaiting a settled future returns at once, again and again
    assert.same({ n = 3, 1, nil, "three" }, table.pack(f:await()))
    assert.same({ n = 3, 1, nil, "three" }, table.pack(async.await(f)))
    assert.same({ n = 3, 1, nil, "three" }, table.pack(f:result()))
  end)

  helper.it("wakes every awaiter", function()
    local f = async.Future()
    local ts = {}
    for i = 1, 10 do
      ts[i] = async.spawn(function() return f:await() + i end)
    end
    async.yield()
    f:set_result(100)
    for i = 1, 10 do assert.equal(100 + i, ts[i]:await()) end
  end)

  helper.it("set_error makes await and result raise that value unchanged", function()
    local e = { reason = "nope" }
    local f = async.Future()
    local t = async.spawn(function() return f:await() end)
    async.yield()
    f:set_error(e)
    assert.is_true(f:done())
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    ok, err = pcall(f.await, f)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))
    ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.is_true(rawequal(e, err))

    local g = async.Future()
    g:set_error("exact")
    ok, err = pcall(g.await, g)
    assert.is_false(ok)
    assert.equal("exact", err)
  end)

  helper.it("cancel makes awaiters raise Cancelled", function()
    local f = async.Future()
    local t = async.spawn(function()
      local ok, err = pcall(f.await, f)
      return ok, async.is_cancelled(err)
    end)
    async.yield()
    f:cancel()
    assert.is_true(f:done())
    assert.same({ n = 2, false, true }, table.pack(t:await()))
    local ok, err = pcall(f.await, f)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.is_true(async.is_cancelled(err))
    -- the awaiting task itself was not cancelled
    assert.is_false(t:cancelled())
  end)

  helper.it("result raises while pending", function()
    local f = async.Future()
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.equal("table", type(err))
    assert.equal("invalid", err.kind)
  end)

  helper.it("setting a done future again raises", function()
    local f = async.Future()
    f:set_result(1)
    for _, op in ipairs({
      function() f:set_result(2) end,
      function() f:set_error("e") end,
    }) do
      local ok, err = pcall(op)
      assert.is_false(ok)
      assert.equal("table", type(err))
      assert.equal("invalid", err.kind)
    end
    assert.equal(1, f:result()) -- unchanged

    local g = async.Future()
    g:set_error("first")
    assert.is_false((pcall(g.set_result, g, 1)))
    assert.is_false((pcall(g.set_error, g, "second")))
    local _, err = pcall(g.result, g)
    assert.equal("first", err)

    local h = async.Future()
    h:cancel()
    assert.is_false((pcall(h.set_result, h, 1)))
    assert.is_false((pcall(h.set_error, h, "x")))
  end)

  helper.it("on_done calls fn(future) once it settles, in every outcome", function()
    local seen = {}
    local fs = { async.Future(), async.Future(), async.Future() }
    for i, f in ipairs(fs) do
      f:on_done(function(x) seen[#seen + 1] = { i, x } end)
    end
    async.sleep(0.001)
    assert.same({}, seen)
    fs[1]:set_result("ok")
    fs[2]:set_error("bad")
    fs[3]:cancel()
    async.sleep(0.01)
    assert.equal(3, #seen)
    local by = {}
    for _, s in ipairs(seen) do
      assert.is_nil(by[s[1]], "called twice")
      by[s[1]] = s[2]
    end
    for i = 1, 3 do assert.equal(fs[i], by[i]) end
  end)

  helper.it("can be settled by one task and awaited by another", function()
    local f = async.Future()
    local producer = async.spawn(function()
      async.sleep(0.01)
      f:set_result("made")
    end)
    assert.equal("made", f:await())
    producer:await()
  end)
end)
