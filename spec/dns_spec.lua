-- async.dns: getaddrinfo on libuv's thread pool.
local helper = require("spec.helper")
local async = helper.async
local dns = async.dns

local function has(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end

describe("async.dns.resolve", function()
  helper.it("resolves localhost to loopback addresses, without duplicates", function()
    local addrs = dns.resolve("localhost")
    assert.is_true(#addrs >= 1)
    assert.is_true(has(addrs, "127.0.0.1") or has(addrs, "::1"), table.concat(addrs, " "))
    local seen = {}
    for _, a in ipairs(addrs) do
      assert.is_nil(seen[a], "duplicate " .. a)
      seen[a] = true
    end
  end)

  helper.it("family = 4 or 6 restricts the result; literal addresses come back as they are", function()
    for _, a in ipairs(dns.resolve("localhost", { family = 4 })) do
      assert.matches("^%d+%.%d+%.%d+%.%d+$", a)
    end
    assert.same({ "127.0.0.1" }, dns.resolve("127.0.0.1"))
    assert.same({ "::1" }, dns.resolve("::1", { family = "inet6" }))
  end)

  helper.it("answers a numeric address at once, when it is of the family asked for", function()
    assert.same({ "127.0.0.1" }, helper.completes_without_suspending(dns.resolve, "127.0.0.1"))
    assert.same({ "::1" }, helper.completes_without_suspending(dns.resolve, "::1", { family = 6 }))
    local err = helper.expect_kind("dns", dns.resolve, "::1", { family = 4 })
    assert.equal("::1", err.host)
  end)

  helper.it("a name that does not resolve raises kind 'dns' with the code and the host", function()
    local err = helper.expect_kind("dns", dns.resolve, "no-such-host.invalid")
    assert.is_string(err.code)
    assert.matches("^EAI_", err.code)
    assert.equal("no-such-host.invalid", err.host)
    assert.is_truthy(tostring(err):find("no-such-host.invalid", 1, true))
  end)

  helper.it("is cancellable, and concurrent resolutions all complete", function()
    local t = helper.started(dns.resolve, "localhost")
    t:cancel()
    helper.expect_cancelled(t)
    helper.expect_timeout(0, dns.resolve, "localhost")
    local tasks = {}
    for i = 1, 50 do tasks[i] = async.spawn(dns.resolve, "localhost") end
    for i = 1, 50 do assert.is_true(#tasks[i]:await() >= 1) end
  end)

  helper.it("bad arguments raise plain errors", function()
    helper.expect_plain_error({ "string expected" }, dns.resolve, nil)
    helper.expect_plain_error({ "host name" }, dns.resolve, "")
    helper.expect_plain_error({ "family" }, dns.resolve, "localhost", { family = 5 })
    helper.expect_plain_error({ "options must be a table" }, dns.resolve, "localhost", 4)
  end)
end)
